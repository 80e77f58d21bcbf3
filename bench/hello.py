"""The framework floor: a bare Flask app with one JSON endpoint, served by the same gunicorn.conf.py.

    gunicorn -c gunicorn.conf.py bench.hello:app
"""
from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def hello():
    """The smallest JSON answer Flask can give."""
    return jsonify(message="hello")
