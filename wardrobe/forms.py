"""Forms of the wardrobe pages: uploading several photos at once (registering is accounts.forms)."""
from django import forms


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field; each is checked by recommender.services.uploads, not here."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/jpeg,image/png,image/webp"}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, (list, tuple)) else [data]
        files = [f for f in files if f]
        if not files:
            raise forms.ValidationError("choose at least one photo")
        return files


class WardrobeUploadForm(forms.Form):
    images = MultipleFileField(label="Photos")
    category = forms.ChoiceField(required=False)
    style = forms.ChoiceField(required=False)

    def __init__(self, *args, categories=(), styles=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["category"].choices = [("", "automatic")] + [(name, name) for name in categories]
        self.fields["style"].choices = [("", "none")] + [(name, name) for name in styles]
