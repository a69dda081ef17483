"""From a decoded page to text: ``html`` (layout-keeping text of HTML and XML), ``maintext`` (main
content and Markdown), ``pagemeta`` (title, language, links, metadata) and ``evaluate`` (the quality
command). Runs inside the worker; imports nothing of the daemon's processes.
"""
