from labweb.roles import ROLES, user_roles


def roles(request) -> dict:
    held = user_roles(getattr(request, "user", None))
    return {"roles": {role: role in held for role in ROLES}}
