"""The sign-in page, the admin's and the API's token endpoint, each refusing a name that failed too often from
one address (labweb.throttle)."""

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from rest_framework import exceptions
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken

from labweb.throttle import client_address, sign_in_limited


class LimitedSignIn:
    """Mixed into a sign-in form: refuses a name that failed too often from this address."""

    def clean(self):
        return sign_in_limited(
            client_address(self.request),
            self.data.get("username") or "",
            super().clean,
            refuse=lambda message: forms.ValidationError(message, code="throttled"),
            failure=forms.ValidationError,
        )


class LimitedAuthenticationForm(LimitedSignIn, AuthenticationForm):
    pass


class LimitedAdminAuthenticationForm(LimitedSignIn, AdminAuthenticationForm):
    pass


class LimitedAuthTokenSerializer(AuthTokenSerializer):
    def validate(self, attrs):
        return sign_in_limited(
            client_address(self.context["request"]),
            attrs.get("username") or "",
            lambda: super(LimitedAuthTokenSerializer, self).validate(attrs),
            refuse=lambda message: exceptions.Throttled(detail=message),
            failure=exceptions.ValidationError,
        )


class ObtainToken(ObtainAuthToken):
    """POST a user name and password for the user's API token; failures count as the sign-in page's do."""

    serializer_class = LimitedAuthTokenSerializer
