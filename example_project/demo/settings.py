"""Settings of the scrapy-gateway demo project.

Every GATEWAY_* setting and its default is in the README's settings table (and in
scrapy_gateway/config.py, which checks them). Only the ones that make the demo easy to watch are set here.
"""

BOT_NAME = "demo"
SPIDER_MODULES = ["demo.spiders"]
NEWSPIDER_MODULE = "demo.spiders"

# Enable scrapy-gateway the recommended way: the add-on installs its downloader middleware and its
# downloader. A value you write in this file always wins over what the add-on sets.
ADDONS = {"scrapy_gateway.Addon": 0}

# The proxies to rotate through, as URLs ("http://host:port" or "http://user:pass@host:port"), or
# GATEWAY_PROXIES_FILE = "proxies.txt" with one URL a line. The demo leaves the list empty here:
# run_demo.py fills it with the demo world's proxies, whose ports are only known at run time.
GATEWAY_PROXIES: list[str] = []

# Log a one-line "Gateway:" summary every 2 s (default 60 s) so a short demo shows a few of them.
GATEWAY_LOG_INTERVAL = 2
# A proxy taken out of rotation comes back on probation after ~2 s (default 10 s, doubling each
# time), short enough for the demo to show a proxy "back in rotation after a good probe".
GATEWAY_COOLDOWN_BASE = 2.0
# Write the crawl health report (an HTML page of charts: proxies and domains over time, retries by
# reason and blame, the final proxy table) here at close, relative to the folder the demo runs in.
GATEWAY_REPORT_FILE = "gateway-report.html"
GATEWAY_REPORT_INTERVAL = 0.5  # seconds between its samples (default 1 s): a short demo gets more points
# Seed the gateway's random choices (proxy picks, jitter); timing still varies between runs.
GATEWAY_SEED = 1

# Plain Scrapy settings.
DOWNLOAD_TIMEOUT = 5  # the demo world answers in milliseconds; fail fast if something hangs
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 8  # the gateway lowers this per origin when the origin is the problem
ROBOTSTXT_OBEY = False  # the demo origins serve no robots.txt
TELNETCONSOLE_ENABLED = False
LOG_LEVEL = "INFO"
