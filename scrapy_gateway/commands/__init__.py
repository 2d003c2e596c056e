"""Scrapy commands of scrapy-gateway, registered under the `scrapy.commands` entry point (setup.cfg)."""
