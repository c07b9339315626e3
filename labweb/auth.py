"""The API's token authentication (its own module: DRF imports it while rest_framework.views is importing)."""

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication


class TokenWithRoles(TokenAuthentication):
    """DRF's token sign-in, with the user's roles read in the same query (one round trip less a request)."""

    def authenticate_credentials(self, key):
        from django.contrib.postgres.aggregates import ArrayAgg
        from django.db import connection

        from labweb.roles import ROLES

        if connection.vendor != "postgresql":
            return super().authenticate_credentials(key)
        found = (
            self.get_model()
            .objects.select_related("user")
            .annotate(group_names=ArrayAgg("user__groups__name", default=[]))
            .filter(key=key)
            .first()
        )
        if found is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = found.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        user._labweb_roles = frozenset(ROLES) if user.is_superuser else frozenset(n for n in found.group_names if n)
        return user, found
