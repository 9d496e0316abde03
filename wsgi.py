"""WSGI entry point: `waitress-serve wsgi:app`, gunicorn, or `finflow serve`."""

from api import create_app
from engine import heap

app = create_app()
heap.settle()
