"""``tickrun web``: the dashboard, an optional extra (``pip install 'tickrun[web]'``).

Importing this package imports no web framework: ``tickrun.web.app`` does, and only
``tickrun web`` (or a test) imports that.
"""
