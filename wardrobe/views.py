"""The user's pages: registering, the wardrobe (uploads with live embedding status), likes, and the outfit
suggestions. Thin views over wardrobe.services (imported where used)."""
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from recommender.models import Look
from recommender.services.uploads import UploadError
from recommender.views import taxonomy
from wardrobe.forms import RegisterForm, WardrobeUploadForm
from wardrobe.models import WardrobeItem


def _wardrobe():
    from wardrobe.services import wardrobe

    return wardrobe


def _next_url(request, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


def _name(value) -> str:
    """A Style/Category row, a name, or None -> the name ("" for none)."""
    if value is None:
        return ""
    return getattr(value, "name", value) or ""


# --- accounts -------------------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def register(request):
    form = RegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("wardrobe")
    return render(request, "registration/register.html", {"form": form}, status=400 if form.errors else 200)


# --- wardrobe -------------------------------------------------------------------------------------------------


def _wardrobe_page(request, form, error=None, status=200):
    items = list(WardrobeItem.objects.filter(owner=request.user).select_related("category", "style"))
    statuses = _wardrobe().wardrobe_statuses(request.user)
    for item in items:
        item.status = statuses.get(item.id, "pending")
    context = {"form": form, "items": items, "error": error, **taxonomy()}
    return render(request, "wardrobe/wardrobe.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def wardrobe_page(request):
    names = taxonomy()
    if request.method == "GET":
        return _wardrobe_page(request, WardrobeUploadForm(categories=names["categories"], styles=names["styles"]))
    form = WardrobeUploadForm(
        request.POST, {"images": request.FILES.getlist("images")},
        categories=names["categories"], styles=names["styles"],
    )
    if not form.is_valid():
        return _wardrobe_page(request, form, status=400)
    try:
        added = _wardrobe().add_wardrobe_items(
            request.user,
            form.cleaned_data["images"],
            category=form.cleaned_data["category"] or None,
            style=form.cleaned_data["style"] or None,
        )
    except UploadError as problem:
        return _wardrobe_page(request, form, error=str(problem), status=400)
    return redirect(reverse("wardrobe") + f"?added={len(added)}")


@require_GET
def wardrobe_status(request):
    """The signed-in user's own items, for the live page: {"items": {id: "pending"|"ready"|"failed"},
    "categories": {id: category name or ""}} (the automatic category arrives once an item is analysed)."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "sign in to see your wardrobe"}, status=403)
    statuses = _wardrobe().wardrobe_statuses(request.user)
    categories = WardrobeItem.objects.filter(owner=request.user).values_list("id", "category__name")
    return JsonResponse(
        {
            "items": {str(item_id): status for item_id, status in statuses.items()},
            "categories": {str(item_id): name or "" for item_id, name in categories},
        }
    )


@login_required
@require_POST
def wardrobe_delete(request, item_id: int):
    try:
        _wardrobe().delete_wardrobe_item(request.user, item_id)
    except WardrobeItem.DoesNotExist:
        raise Http404("no such item in your wardrobe")
    return redirect("wardrobe")


@login_required
@require_POST
def wardrobe_edit(request, item_id: int):
    """Corrects an item's category (the automatic one included) and/or style."""
    changes = {key: request.POST[key] for key in ("category", "style") if key in request.POST}
    try:
        _wardrobe().update_wardrobe_item(request.user, item_id, **changes)
    except WardrobeItem.DoesNotExist:
        raise Http404("no such item in your wardrobe")
    except ValueError as problem:
        names = taxonomy()
        form = WardrobeUploadForm(categories=names["categories"], styles=names["styles"])
        return _wardrobe_page(request, form, error=str(problem), status=400)
    return redirect(reverse("wardrobe") + f"#item-{item_id}")


# --- likes ----------------------------------------------------------------------------------------------------


def _toggle_like(request, look_id: int, like: bool):
    if not Look.objects.filter(pk=look_id).exists():
        raise Http404("no such look")
    service = _wardrobe()
    (service.like_look if like else service.unlike_look)(request.user, look_id)
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"look_id": look_id, "liked": like})
    return redirect(_next_url(request, reverse("looks")))


@login_required
@require_POST
def like(request, look_id: int):
    return _toggle_like(request, look_id, True)


@login_required
@require_POST
def unlike(request, look_id: int):
    return _toggle_like(request, look_id, False)


# --- suggestions ----------------------------------------------------------------------------------------------

SUGGESTIONS_PER_PAGE = 12


def _filter_value(request, key: str, saved: str, allowed) -> str:
    """The filter from the query string when given ("" = any), else the saved preference."""
    if key in request.GET:
        value = request.GET[key]
        return value if value in allowed else ""
    return saved if saved in allowed else ""


@login_required
@require_GET
def suggestions_page(request):
    from wardrobe.services.suggestions import get_suggestions

    names = taxonomy()
    preferences = _wardrobe().get_preferences(request.user)
    saved = {"style": _name(preferences.style), "category": _name(preferences.category)}
    style = _filter_value(request, "style", saved["style"], names["styles"])
    category = _filter_value(request, "category", saved["category"], names["categories"])
    # "" (any) is passed as such, so an explicit "any" is not replaced by the saved preference.
    suggestions = get_suggestions(request.user, style=style, category=category)
    page = Paginator(suggestions, SUGGESTIONS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "suggestions": [_card(suggestion) for suggestion in page],
        "page": page,
        # the pages' links carry the filters in force, so a saved default changed meanwhile cannot swap them
        "query": urlencode({"style": style, "category": category}),
        "style": style,
        "category": category,
        "saved": saved,
        "liked": _wardrobe().liked_look_ids(request.user),
        "wardrobe_size": WardrobeItem.objects.filter(owner=request.user).count(),
        **names,
    }
    return render(request, "wardrobe/suggestions.html", context)


def _as_list(value) -> list:
    return list(value.all()) if hasattr(value, "all") else list(value or [])


def _card(suggestion) -> dict:
    """What a suggestion card shows, whether the service gives lists or related managers."""
    if hasattr(suggestion, "complete_with_items"):
        complete_with = suggestion.complete_with_items()
    else:
        complete_with = _as_list(suggestion.complete_with)
    snapshot = getattr(suggestion, "snapshot", None) or suggestion.look.snapshots.first()
    return {
        "look": suggestion.look,
        "snapshot": snapshot,
        "score": suggestion.score,
        "reason": suggestion.reason,
        "your_items": _as_list(suggestion.your_items),
        "complete_with": complete_with,
    }


@login_required
@require_POST
def save_preferences(request):
    names = taxonomy()
    style = request.POST.get("style", "")
    category = request.POST.get("category", "")
    _wardrobe().set_preferences(
        request.user,
        style if style in names["styles"] else None,
        category if category in names["categories"] else None,
    )
    return redirect(reverse("suggestions") + "?saved=1")
