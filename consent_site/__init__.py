"""The consent site: the candidate's pages and the admin pages (aiohttp + jinja2)."""
