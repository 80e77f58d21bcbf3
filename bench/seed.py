"""Seed the benchmark's data through the app's own models and services (run with the service's environment).

    python -m bench.seed OUT.json --users 200 --bearer 32 --chains 256

* `--users` accounts `bench-N@example.com` sharing one password. Its Argon2id hash is computed once, with the
  parameters of the app's configuration, and stored for every account (hashing each would take minutes).
* `--bearer` sessions (one per account) whose access tokens drive /users/me, /auth/verify and introspection.
* `--chains` sessions whose refresh tokens start the refresh chains, and one more session for the revocation
  check. Sessions are made with sessions.start_session, exactly as a login makes them, minus the Argon2 work.

Writes OUT.json with the tokens, the password and the Argon2 parameters the service uses.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid

from authsvc import create_app
from authsvc.extensions import db
from authsvc.models import User, utcnow
from authsvc.services import keys, passwords, sessions

PASSWORD = "bench horse battery 0451"


def main(argv=None) -> int:
    """Seed accounts, sessions and refresh chains; write what the load needs as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--bearer", type=int, default=32)
    parser.add_argument("--chains", type=int, default=256)
    args = parser.parse_args(argv)

    app = create_app()
    with app.app_context():
        cfg = app.config
        keys.ring()  # creates the first signing key, as the first production start would
        password_hash = passwords.hasher().hash(PASSWORD)
        now = utcnow()
        users = [User(id=uuid.uuid4(), email=f"bench-{i}@example.com", password_hash=password_hash,
                      full_name=f"Bench User {i}", tier=cfg["TIERS"][0], email_verified=True, is_active=True,
                      created_at=now, updated_at=now) for i in range(args.users)]
        for user in users:
            user.roles = []
        db.session.add_all(users)
        db.session.flush()

        def session_for(user):
            """Start a session for `user` and stage it."""
            return sessions.start_session(user, "authsvc-bench", "127.0.0.1")

        bearer = [session_for(users[i % len(users)]) for i in range(args.bearer)]
        chains = []
        for i in range(args.chains):
            pair = session_for(users[i % len(users)])
            chains.append(pair["refresh_token"])
        revocation_user = users[-1]
        revocation = session_for(revocation_user)
        db.session.commit()
        out = {
            "password": PASSWORD,
            "emails": [u.email for u in users],
            "access_tokens": [p["access_token"] for p in bearer],
            "refresh_tokens": chains,
            "revocation": {"access_token": revocation["access_token"], "email": revocation_user.email},
            "argon2": {"time_cost": cfg["ARGON2_TIME_COST"], "memory_cost": cfg["ARGON2_MEMORY_COST"],
                       "parallelism": cfg["ARGON2_PARALLELISM"], "hash": password_hash},
            "config": {k: cfg[k] for k in ("ENV", "JWT_ALGORITHM", "RATELIMIT_ENABLED", "MAIL_WORKER",
                                           "DB_POOL_SIZE", "REFRESH_REUSE_GRACE_SECONDS")},
        }
    with open(args.out, "w") as fh:
        json.dump(out, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
