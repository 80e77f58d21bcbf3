"""Signals the services send about auth events; the audit trail, metrics and mail subscribe to them.

Each is sent with the app as sender and keyword arguments naming the user and what happened.
"""
from blinker import Namespace

_signals = Namespace()

user_registered = _signals.signal("user_registered")
login_succeeded = _signals.signal("login_succeeded")
login_failed = _signals.signal("login_failed")
logout = _signals.signal("logout")
session_revoked = _signals.signal("session_revoked")
refresh_reused = _signals.signal("refresh_reused")
password_changed = _signals.signal("password_changed")
user_updated = _signals.signal("user_updated")
user_deactivated = _signals.signal("user_deactivated")
email_verified = _signals.signal("email_verified")
email_changed = _signals.signal("email_changed")
password_reset = _signals.signal("password_reset")
client_created = _signals.signal("client_created")
client_deleted = _signals.signal("client_deleted")
user_deleted = _signals.signal("user_deleted")
account_blocked = _signals.signal("account_blocked")
google_linked = _signals.signal("google_linked")
google_unlinked = _signals.signal("google_unlinked")
