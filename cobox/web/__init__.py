"""The web dashboard: served by the daemon on its control API's address, behind the same token.

``routes`` registers the pages, the login flow and the server-sent events on the control
server's aiohttp app; ``sessions`` holds one-time login codes and browser sessions;
``throughput`` keeps a bounded history of per-group counters for the plot; ``static/`` is the
page itself (plain HTML, CSS and JS, no build step, every asset served from here).
"""
