"""Admin API: users and service clients (each view declares the permission it needs)."""
from flask import g, jsonify

from ...readonly import read_only
from ...auth import permission_required
from ...errors import APIError
from ...extensions import db
from ...openapi import document
from ...schemas import AdminUserIn, AdminUserPatch, AuditQuery, ClientIn, UserListQuery, parse, parse_query
from ...services import admin, audit, clients, users
from . import bp


def _user(user_id: str):
    user = users.get_user(user_id)
    if user is None:
        raise APIError(404, "not_found", "No such user.")
    return user


@bp.get("/admin/users")
@read_only
@document(auth="users:read", query=UserListQuery, responses={200: "UserPage"},
          errors={422: "validation_error"})
@permission_required("users:read")
def list_users():
    """Users, paginated, searchable by email and name, filterable by status and role."""
    query = parse_query(UserListQuery)
    return jsonify(admin.list_users(query.page, query.per_page, query.q, query.is_active, query.role))


@bp.post("/admin/users")
@document(auth="users:write", body=AdminUserIn, responses={201: "User"}, errors={409: "email_taken"})
@permission_required("users:write")
def create_user():
    """Create a user → 201 User."""
    body = parse(AdminUserIn)
    user = admin.create_user(g.user, body.email, body.password, body.full_name, body.roles, body.tier,
                             body.email_verified)
    db.session.commit()
    return jsonify(user.to_dict()), 201


@bp.get("/admin/users/<user_id>")
@read_only
@document(auth="users:read", responses={200: "User"})
@permission_required("users:read")
def get_user(user_id: str):
    """One user."""
    return jsonify(_user(user_id).to_dict())


@bp.patch("/admin/users/<user_id>")
@document(auth="users:write", body=AdminUserPatch, responses={200: "User"},
          errors={409: ("email_taken", "conflict")})
@permission_required("users:write")
def update_user(user_id: str):
    """Change a user; deactivating ends their sessions → User. A field sent as null stays as it is."""
    changes = parse(AdminUserPatch).model_dump(exclude_unset=True, exclude_none=True)
    user = admin.update_user(g.user, _user(user_id), changes)
    db.session.commit()
    return jsonify(user.to_dict())


@bp.delete("/admin/users/<user_id>")
@document(auth="users:write", responses={204: None}, errors={409: "conflict"})
@permission_required("users:write")
def delete_user(user_id: str):
    """Hard-delete a user → 204."""
    admin.delete_user(g.user, _user(user_id))
    db.session.commit()
    return "", 204


@bp.get("/admin/clients")
@read_only
@document(auth="clients:manage", responses={200: list["Client"]})
@permission_required("clients:manage")
def list_clients():
    """Every service client (secrets are never shown again)."""
    return jsonify([c.to_dict() for c in clients.all_clients()])


@bp.post("/admin/clients")
@document(auth="clients:manage", body=ClientIn, responses={201: "ClientCreated"})
@permission_required("clients:manage")
def create_client():
    """Create a service client → 201 with its `client_secret`, shown this once."""
    body = parse(ClientIn)
    client, secret = clients.create(body.name.strip(), body.scopes, by=g.user.id)
    db.session.commit()
    return jsonify({**client.to_dict(), "client_secret": secret}), 201


@bp.delete("/admin/clients/<client_id>")
@document(auth="clients:manage", responses={204: None})
@permission_required("clients:manage")
def delete_client(client_id: str):
    """Delete a service client; its tokens stop working → 204."""
    clients.delete(clients.get(client_id), by=g.user.id)
    db.session.commit()
    return "", 204


@bp.get("/admin/audit")
@read_only
@document(auth="audit:read", query=AuditQuery, responses={200: "AuditPage"}, errors={422: "validation_error"})
@permission_required("audit:read")
def audit_events():
    """Auth events, newest first, filterable by user and event name."""
    query = parse_query(AuditQuery)
    return jsonify(audit.events(query.page, query.per_page, query.user_id, query.event))
