"""Request and response shapes of the catalogue's API: accounts, search, admin re-embedding."""
from rest_framework import serializers

from recommender.models import Category, ModelVersion, ReembedJob, Style

MAX_K = 50
DEFAULT_K = 6


def absolute_url(request, field) -> str | None:
    if not field:
        return None
    return request.build_absolute_uri(field.url) if request is not None else field.url


class RegisterSerializer(serializers.Serializer):
    """Validated and saved by accounts.forms.RegisterForm, the page's form (Django's password validators)."""

    username = serializers.CharField(max_length=150)
    password = serializers.CharField(write_only=True, style={"input_type": "password"})

    def validate(self, data):
        from accounts.forms import RegisterForm

        self.form = RegisterForm.from_api(data["username"], data["password"])
        if not self.form.is_valid():
            raise serializers.ValidationError(self.form.api_errors())
        return data

    def create(self, validated_data):
        return self.form.save()


class CredentialsSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(write_only=True, style={"input_type": "password"})


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


class NameChoiceField(serializers.CharField):
    """A taxonomy name (Category or Style); "" or absent means no filter; an unknown name is a 400."""

    def __init__(self, model, **kwargs):
        self.model = model
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data).strip()
        if "\x00" in value:  # checked before the database sees it (Postgres text cannot hold NUL)
            raise serializers.ValidationError("null characters are not allowed")
        if value and not self.model.objects.filter(name=value).exists():
            known = ", ".join(self.model.objects.order_by("name").values_list("name", flat=True))
            raise serializers.ValidationError(f"unknown {self.model._meta.verbose_name} {value!r} (known: {known})")
        return value


class SearchSerializer(serializers.Serializer):
    image = serializers.FileField(allow_empty_file=True, help_text="The query image: JPEG, PNG or WebP, at most 10 MB and 40 megapixels.")
    k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=DEFAULT_K, required=False)


class ItemSearchSerializer(SearchSerializer):
    category = NameChoiceField(Category, help_text="Only items of this category (optional).")


class LookSearchSerializer(SearchSerializer):
    style = NameChoiceField(Style, help_text="Only looks of this style (optional).")


class ItemResultSerializer(serializers.Serializer):
    item_id = serializers.IntegerField()
    image_url = serializers.CharField()
    score = serializers.FloatField()
    category = serializers.CharField(allow_null=True)


class LookResultSerializer(serializers.Serializer):
    look_id = serializers.IntegerField()
    snapshot_url = serializers.CharField()
    score = serializers.FloatField()
    style = serializers.CharField(allow_null=True)


class ItemResultsSerializer(serializers.Serializer):
    results = ItemResultSerializer(many=True)


class RecognisedItemSerializer(serializers.Serializer):
    item_id = serializers.IntegerField()
    image_url = serializers.CharField()
    match = serializers.ChoiceField(choices=["identical", "near-duplicate"])
    similarity = serializers.FloatField()


class LookResultsSerializer(serializers.Serializer):
    results = LookResultSerializer(many=True)
    recognised_item = RecognisedItemSerializer(
        allow_null=True,
        help_text="The catalogue product the upload was recognised as (its expert links then guide the search), "
                  "or null.")


class ReembedSerializer(serializers.Serializer):
    model_version = serializers.CharField(help_text="The name (or id) of a registered model version.")

    def validate_model_version(self, value):
        version = ModelVersion.objects.filter(name=value).first()
        if version is None and str(value).isascii() and str(value).isdigit():  # "³" is a digit, not an int()
            version = ModelVersion.objects.filter(pk=int(value)).first()
        if version is None:
            known = ", ".join(ModelVersion.objects.values_list("name", flat=True))
            raise serializers.ValidationError(f"no model version {value!r} (registered: {known})")
        return version


class JobSerializer(serializers.ModelSerializer):
    job_id = serializers.IntegerField(source="id")
    model_version = serializers.CharField(source="model_version.name")
    active = serializers.BooleanField(source="model_version.is_active")

    class Meta:
        model = ReembedJob
        fields = ["job_id", "model_version", "state", "done", "total", "failed", "error", "active", "created", "finished"]
