"""WSGI entry point for gunicorn: `gunicorn -w 4 'hms.wsgi:app'`."""

from hms.app import create_app

app = create_app()
