"""The scrapy-gateway demo project: one spider crawling the demo world's origins through its proxies."""
