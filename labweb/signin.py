"""The sign-in page and the API's token endpoint, both refusing a name that failed too often (labweb.throttle)."""

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from rest_framework import exceptions
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken

from labweb.throttle import client_address, login_failed, login_refusal, login_succeeded


class LimitedAuthenticationForm(AuthenticationForm):
    """The sign-in form, refusing a name that failed too often from this address (labweb.throttle)."""

    def clean(self):
        address, username = client_address(self.request), self.data.get("username") or ""
        refusal = login_refusal(address, username)
        if refusal:
            raise forms.ValidationError(refusal, code="throttled")
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            login_failed(address, username)
            raise
        login_succeeded(address, username)
        return cleaned


class LimitedAuthTokenSerializer(AuthTokenSerializer):
    def validate(self, attrs):
        request = self.context["request"]
        address, username = client_address(request), attrs.get("username") or ""
        refusal = login_refusal(address, username)
        if refusal:
            raise exceptions.Throttled(detail=refusal)
        try:
            attrs = super().validate(attrs)
        except exceptions.ValidationError:
            login_failed(address, username)
            raise
        login_succeeded(address, username)
        return attrs


class ObtainToken(ObtainAuthToken):
    """POST a user name and password for the user's API token; failures count as the sign-in page's do."""

    serializer_class = LimitedAuthTokenSerializer
