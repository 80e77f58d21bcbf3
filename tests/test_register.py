"""POST /api/v1/auth/register."""
import pytest

from .conftest import PASSWORD


def test_register_returns_user_without_secrets(auth):
    response = auth.register("New@Example.COM", full_name="  Ada Lovelace ")
    assert response.status_code == 201
    user = response.json
    assert set(user) == {"id", "email", "full_name", "email_verified", "is_active", "roles", "tier",
                         "created_at", "updated_at"}
    assert user["email"] == "New@example.com"  # domain normalised, local part kept
    assert user["full_name"] == "Ada Lovelace"
    assert user["email_verified"] is False and user["is_active"] is True
    assert user["roles"] == [] and user["tier"] == "free"
    assert user["created_at"].endswith("Z")


def test_email_is_unique_case_insensitively(auth):
    assert auth.register("someone@example.com").status_code == 201
    response = auth.register("SOMEONE@example.com")
    assert response.status_code == 409
    assert response.json["error"]["code"] == "email_taken"


def test_register_with_tier(auth):
    assert auth.register(tier="premium").json["tier"] == "premium"


@pytest.mark.settings(REGISTER_TIERS="free")
def test_a_tier_not_open_to_registration_is_refused(auth, app):
    # Apps may grant paid features by the token's tier: the person registering must not pick a paid one.
    refused = auth.register(tier="premium")
    assert refused.status_code == 422 and set(refused.json["error"]["fields"]) == {"tier"}
    assert auth.register("other@example.com", tier="free").json["tier"] == "free"
    assert auth.register("third@example.com").json["tier"] == "free"


@pytest.mark.settings(TIERS="gold,silver")
def test_default_tier_is_the_first_configured(auth):
    assert auth.register().json["tier"] == "gold"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"password": PASSWORD}, "email"),
        ({"email": "user@example.com"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "a@b", "password": PASSWORD}, "email"),
        ({"email": 42, "password": PASSWORD}, "email"),
        ({"email": "user@example.com", "password": 12345678}, "password"),
        ({"email": "user@example.com", "password": "short"}, "password"),
        ({"email": "user@example.com", "password": "x" * 257}, "password"),
        ({"email": "user@example.com", "password": "user@example.com"}, "password"),
        ({"email": "user@example.com", "password": "USER@example.com "}, "password"),
        ({"email": "lovelace.ada@example.com", "password": "Lovelace.Ada"}, "password"),  # the address' local part
        ({"email": "user@example.com", "password": PASSWORD, "tier": "platinum"}, "tier"),
        ({"email": "user@example.com", "password": PASSWORD, "full_name": "x" * 201}, "full_name"),
        ({"email": "user@example.com", "password": "nul\x00in the middle"}, "password"),
        ({"email": "user@example.com", "password": "lone \ud800 surrogate"}, "password"),
        ({"email": "user@exa\x00mple.com", "password": PASSWORD}, "email"),
        ({"email": "Ωmega@example.com", "password": PASSWORD}, "email"),  # no SMTPUTF8 mailbox names
        ({"email": "ωmega@example.com", "password": PASSWORD}, "email"),
    ],
)
def test_invalid_registrations(client, body, field):
    response = client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "validation_error"
    assert field in error["fields"]


def test_nothing_is_created_by_a_rejected_registration(auth):
    auth.register(password="short")
    assert auth.register().status_code == 201


def test_password_is_stored_as_argon2id(app, auth):
    from authsvc.models import User
    from authsvc.extensions import db

    auth.register()
    with app.app_context():
        stored = db.session.query(User).one().password_hash
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


@pytest.mark.parametrize("common", ["password1", "iloveyou1", "Qwerty123", "1234567890"])
def test_common_passwords_are_refused(auth, common):
    response = auth.register(password=common)
    assert response.status_code == 422
    assert "common" in " ".join(response.json["error"]["fields"]["password"])


def test_an_internationalised_domain_is_kept_in_its_ascii_form(auth, client):
    # Matched case-insensitively by databases that fold only ASCII, carried by headers and mail servers that take
    # only ASCII: the domain is stored as IDNA, and the same address typed either way is the same account.
    response = auth.register("Reader@Bücher.de")
    assert response.status_code == 201 and response.json["email"] == "Reader@xn--bcher-kva.de"
    assert auth.register("reader@BÜCHER.de").status_code == 409
    for typed in ("reader@bücher.de", "READER@xn--bcher-kva.de"):
        pair = auth.login(typed)
        assert pair.status_code == 200
    verified = client.get("/api/v1/auth/verify", headers=auth.bearer(pair.json))
    assert verified.status_code == 200 and verified.headers["X-User-Email"] == "Reader@xn--bcher-kva.de"


@pytest.mark.parametrize("missing, status", [(1, 422), (0, 201)])
def test_the_minimum_password_length_is_inclusive(app, auth, missing, status):
    """A password of exactly PASSWORD_MIN_LENGTH characters is accepted; one character fewer is refused."""
    password = "Zq7#mKx2pLw9vB4n"[:app.config["PASSWORD_MIN_LENGTH"] - missing]
    response = auth.register(password=password)
    assert response.status_code == status
    if status == 422:
        assert response.json["error"]["code"] == "validation_error" and "password" in response.json["error"]["fields"]
