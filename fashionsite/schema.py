"""drf-spectacular's AutoSchema, documenting every operation's error responses in the one error shape
(fashionsite.errors): which of 400, 401, 403, 404, 415 and 429 an operation can answer follows from the view
(its input, authentication, permissions, path parameters, pagination, throttles). A view documents others (409, or a 404
without path parameters) in its own extend_schema responses, which are kept as they are."""
from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers
from rest_framework.authentication import SessionAuthentication

UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class ErrorSerializer(serializers.Serializer):
    """Every error of the API."""

    detail = serializers.CharField(help_text="A sentence naming the problem.")
    code = serializers.CharField(help_text="A machine-readable code, e.g. invalid, not_found, throttled.")
    status = serializers.IntegerField(help_text="The HTTP status code.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="For invalid input: the messages per field (nested fields as `field.0.name`).",
    )


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


class AutoSchema(openapi.AutoSchema):
    def _error_statuses(self) -> dict[int, str]:
        view, method = self.view, self.method
        takes_body = method in ("POST", "PUT", "PATCH")
        authenticators = [cls() for cls in getattr(view, "authentication_classes", [])]
        checks = [cls() for cls in getattr(view, "permission_classes", [])]
        open_to_all = all(isinstance(check, permissions.AllowAny) for check in checks)
        statuses = {}
        if takes_body or self.get_override_parameters():
            statuses[400] = "Invalid input: `errors` names each field's problem."
        if authenticators:
            statuses[401] = "Not signed in, or an invalid token." if not open_to_all else "An invalid token."
        staff_only = any(isinstance(check, permissions.IsAdminUser) for check in checks)
        session = any(isinstance(a, SessionAuthentication) for a in authenticators)
        if staff_only or (session and method in UNSAFE_METHODS):
            statuses[403] = "Staff only." if staff_only else "A session request without its CSRF token."
        if "{" in self.path:
            statuses[404] = "No such object (or not yours)."
        elif getattr(view, "pagination_class", None) is not None:
            statuses[404] = "No such page (past the last, or not a page number)."
        if takes_body:
            statuses[415] = "A request body in a content type the operation does not read."
        if getattr(view, "throttle_classes", None):
            statuses[429] = "Too many requests: see Retry-After."
        return statuses

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status, description in self._error_statuses().items():
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(
                    error_response(description), str(status), direction=direction
                )
        return dict(sorted(responses.items()))
