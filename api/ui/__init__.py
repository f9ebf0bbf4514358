"""The delivery log page: a server-rendered view of an enterprise's notifications at /ui/.

- session.py: the signed session cookie and its CSRF tokens.
- auth.py: login, logout, and the session every page runs under.
- routes.py: the pages (list, one notification) and the cancel and retry forms.
- views.py: what the pages show, built from the same services and routes as the API.
- templates/ and static/: Jinja2 pages (autoescaped) and one stylesheet; no build step and
  nothing loaded from elsewhere.
"""
