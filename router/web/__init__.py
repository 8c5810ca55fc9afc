"""The web app: server-rendered pages over the same services as the API, and a small script that
calls the JSON API with the session cookie (and a CSRF header) for what changes or streams."""
