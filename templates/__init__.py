"""The jinja2 templates: the only place wording lives. A package so they ship with the wheel."""
