"""The decision core: plain Python, no Scrapy or Twisted imports, clock and randomness passed in."""
