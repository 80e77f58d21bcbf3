"""Password hashing: Argon2id parameters, rehash on change, legacy bcrypt verification and upgrade."""
import bcrypt
import pytest
from argon2 import PasswordHasher

from authsvc.extensions import db
from authsvc.models import User
from authsvc.services.passwords import Hasher

from .conftest import PASSWORD


def _set_hash(app, value):
    with app.app_context():
        db.session.query(User).update({"password_hash": value})
        db.session.commit()


def _stored(app):
    with app.app_context():
        return db.session.query(User).one().password_hash


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_hash_verifies_and_is_upgraded(app, auth, prefix):
    auth.register()
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    _set_hash(app, prefix + legacy[4:])
    assert auth.login(password="wrong password 1").status_code == 401
    assert _stored(app).startswith(prefix)  # a failed login changes nothing
    assert auth.login().status_code == 200
    assert _stored(app).startswith("$argon2id$")
    assert auth.login().status_code == 200


def test_bcrypt_of_long_password_uses_first_72_bytes(app, auth):
    long_password = "p" * 80 + " tail"
    auth.register(password=long_password)
    _set_hash(app, bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(rounds=4)).decode())
    assert auth.login(password=long_password).status_code == 200


def test_malformed_stored_hash_is_just_a_failed_login(app, auth):
    auth.register()
    _set_hash(app, "$2b$garbage")
    assert auth.login().json["error"]["code"] == "invalid_credentials"
    _set_hash(app, "not-a-hash")
    assert auth.login().json["error"]["code"] == "invalid_credentials"


def test_rehash_when_parameters_change(app, auth):
    auth.register()
    current = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    _set_hash(app, current)  # the app's own parameters: no rehash
    auth.login()
    assert _stored(app) == current
    _set_hash(app, PasswordHasher(time_cost=2, memory_cost=16, parallelism=1).hash(PASSWORD))
    assert auth.login().status_code == 200
    assert "m=8,t=1,p=1" in _stored(app)


def test_default_parameters_are_the_owasp_minimum():
    from authsvc.config import Settings

    defaults = Settings.model_fields
    assert defaults["ARGON2_MEMORY_COST"].default == 19456
    assert defaults["ARGON2_TIME_COST"].default == 2
    assert defaults["ARGON2_PARALLELISM"].default == 1


def test_hasher_round_trip():
    hasher = Hasher(time_cost=1, memory_cost=8, parallelism=1)
    stored = hasher.hash("some passphrase")
    assert hasher.verify(stored, "some passphrase") == (True, None)
    assert hasher.verify(stored, "other passphrase") == (False, None)
    assert hasher.verify(None, "anything") == (False, None)


ACCENTED = "crème brûlée façade"  # composed (NFC) here; NFD spells each accent as a combining mark


@pytest.mark.parametrize("registered, typed", [("NFC", "NFD"), ("NFD", "NFC")])
def test_a_password_typed_in_another_unicode_form_signs_in(auth, registered, typed):
    import unicodedata

    assert auth.register("u@example.com", unicodedata.normalize(registered, ACCENTED)).status_code == 201
    assert auth.login("u@example.com", unicodedata.normalize(typed, ACCENTED)).status_code == 200
    assert auth.login("u@example.com", "crème brûlée facade").status_code == 401


def test_a_hash_of_the_text_as_typed_still_verifies_and_is_upgraded(app, auth):
    """Hashes made before passwords were normalised (or imported) hold the raw text."""
    import unicodedata

    raw = unicodedata.normalize("NFD", ACCENTED)
    auth.register()
    _set_hash(app, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(raw))
    assert auth.login(password=raw).status_code == 200
    upgraded = _stored(app)
    assert PasswordHasher().verify(upgraded, unicodedata.normalize("NFKC", raw))
    assert auth.login(password=unicodedata.normalize("NFC", ACCENTED)).status_code == 200


def test_a_full_width_common_password_is_still_common(auth):
    response = auth.register("v@example.com", "ｐａｓｓｗｏｒｄ１２３")
    assert response.status_code == 422
    assert response.json["error"]["fields"]["password"] == ["is one of the most common passwords"]
