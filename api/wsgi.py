"""WSGI entry point for gunicorn: `gunicorn api.wsgi:app`."""

import gc

from api import create_app

app = create_app()
# Everything loaded so far lives as long as the process: keep it out of the garbage
# collector's full passes, which otherwise stall every request in flight for ~70 ms.
gc.freeze()
