"""The three roles of LabWeb, as Django groups. Superusers hold every role."""

from functools import wraps

from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

CURATOR = "curator"
REVIEWER = "reviewer"
OPERATOR = "operator"
ROLES = (CURATOR, REVIEWER, OPERATOR)


def user_roles(user) -> frozenset[str]:
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    cached = getattr(user, "_labweb_roles", None)
    if cached is None:
        cached = frozenset(ROLES) if user.is_superuser else frozenset(user.groups.values_list("name", flat=True))
        user._labweb_roles = cached
    return cached


def has_role(user, role: str) -> bool:
    return role in user_roles(user)


def role_required(role: str):
    """View decorator: 403 for a signed-in user without `role` (sign-in itself is enforced by middleware)."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not has_role(request.user, role):
                raise PermissionDenied(f"This needs the {role} role.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class HasRole(BasePermission):
    """DRF permission: reads need any role; writes need `write_role` (and `read_role` where set)."""

    read_role: str | None = None
    write_role: str | None = None
    message = "You do not have the role this needs."

    def has_permission(self, request, view) -> bool:
        roles = user_roles(request.user)
        if not roles:
            return False
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return self.read_role is None or self.read_role in roles
        return self.write_role is None or self.write_role in roles


def role_permission(*, write: str | None, read: str | None = None) -> type[HasRole]:
    return type(f"HasRole_{read}_{write}", (HasRole,), {"read_role": read, "write_role": write})


HasAnyRole = role_permission(write=None)


def any_role_required(view):
    """Reads need a role too: a signed-in user whom nobody has given a role sees nothing."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not user_roles(request.user):
            raise PermissionDenied("You have no LabWeb role yet; ask an administrator for one.")
        return view(request, *args, **kwargs)

    return wrapped


curator_required = role_required(CURATOR)
reviewer_required = role_required(REVIEWER)
operator_required = role_required(OPERATOR)
