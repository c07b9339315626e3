"""What every generation page shares: the operator check, and a LabError put beside its form field."""

from django.forms import Form

from curation.taxonomy import LabError
from labweb.roles import OPERATOR, role_required

operator_required = role_required(OPERATOR)


def add_lab_error(form: Form, error: LabError, aliases: dict[str, str] | None = None) -> int:
    """Show a service's refusal beside the field it names (or above the form); the response status to use."""
    field = (aliases or {}).get(error.field or "", error.field)
    form.add_error(field if field in form.fields else None, error.message)
    return error.status if error.status == 409 else 422
