"""The one registration form: the page renders it, the API's RegisterSerializer validates and saves through it,
so both paths check the same things (a free username, case aside; Django's password validators)."""
from django.contrib.auth.forms import UserCreationForm


class RegisterForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        fields = ("username",)

    @classmethod
    def from_api(cls, username, password):
        """The form for an API registration (one password field: it is its own confirmation)."""
        return cls(data={"username": username, "password1": password, "password2": password})

    def api_errors(self) -> dict[str, list[str]]:
        """Field errors under the API's field names (password1 and password2 are both `password`)."""
        errors: dict[str, list[str]] = {}
        for field, messages in self.errors.items():
            name = "password" if field in ("password1", "password2") else field
            for message in messages:
                if message not in errors.setdefault(name, []):
                    errors[name].append(message)
        return errors
