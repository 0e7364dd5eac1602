"""Administration: use cases over accounts, clients, keys and the audit log, their HTML pages and
their JSON API. May import ``accounts`` and ``oauth``; nothing imports ``admin``."""
