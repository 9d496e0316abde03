"""WSGI entry point: `waitress-serve wsgi:app`, gunicorn, or `finflow serve`."""

from api import create_app

app = create_app()
