"""The catalogue's web pages: the two search tabs (snapshot -> items, item -> looks), browsing the looks, and
the health report. Thin views: the work is in recommender.services."""
import base64
import io

from django.core.paginator import Paginator
from django.http import Http404, HttpResponseBadRequest, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from fashionsite.errors import json_error
from fashionsite.media import clean_media_name, stored_file_response
from fashionsite.throttling import throttled
from recommender.api.views import SearchAnonThrottle, SearchScopedThrottle
from recommender.models import Category, CategorySource, Look, ModelVersion, Style
from recommender.services.tagging import set_item_category
from recommender.taxonomy import CATEGORIES
from recommender.services.health import health_report
from recommender.services.search import search_items, search_looks
from recommender.services.uploads import UploadError, check_query
from wardrobe.services.wardrobe import liked_look_ids

DEFAULT_K = 6
MAX_K = 48
LOOKS_PER_PAGE = 24
TABS = ("items", "looks")


@require_GET
def healthz(request):
    report, healthy = health_report()
    return JsonResponse(report, status=200 if healthy else 503)


def taxonomy():
    """The category and style names, in the taxonomy's own order."""
    return {
        "categories": list(Category.objects.order_by("id").values_list("name", flat=True)),
        "styles": list(Style.objects.order_by("id").values_list("name", flat=True)),
    }


# --- search ---------------------------------------------------------------------------------------------------


class SearchRequestError(ValueError):
    pass


def _wants_json(request) -> bool:
    return request.GET.get("format") == "json" or "application/json" in request.headers.get("Accept", "")


def _parse_k(raw) -> int:
    if raw in (None, ""):
        return DEFAULT_K
    try:
        k = int(raw)
    except (TypeError, ValueError):
        raise SearchRequestError(f"k must be a whole number, not {raw!r}")
    if not 1 <= k <= MAX_K:
        raise SearchRequestError(f"k must be between 1 and {MAX_K}")
    return k


def _parse_choice(raw, allowed, what: str) -> str | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if raw not in allowed:
        raise SearchRequestError(f"unknown {what} {raw!r}; choose one of: {', '.join(allowed)}")
    return raw


THUMBNAIL_SIZE = 360  # pixels, the longer side of the query shown beside its results


def _thumbnail_data_url(image, size: int = THUMBNAIL_SIZE) -> str:
    """The query image as an inline JPEG (shown beside the results; the upload itself is never stored)."""
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _search_context(request, tab: str, **extra) -> dict:
    values = {"k": DEFAULT_K, "category": "", "style": ""}
    values.update(extra.pop("values", {}))
    return {"tab": tab, "values": values, "max_k": MAX_K, **taxonomy(), **extra}


@require_GET
def search_page(request):
    tab = request.GET.get("tab", "items")
    return render(request, "recommender/search.html", _search_context(request, tab if tab in TABS else "items"))


def _run_search(request, tab: str):
    names = taxonomy()
    values = {
        "k": request.POST.get("k") or DEFAULT_K,
        "category": request.POST.get("category", ""),
        "style": request.POST.get("style", ""),
    }
    status, error, results, query_image, recognised = 200, None, None, None, None
    try:
        k = _parse_k(request.POST.get("k"))
        upload = request.FILES.get("image")
        if upload is None:
            raise SearchRequestError("choose an image to search with")
        query = check_query(upload)
        if tab == "items":
            category = _parse_choice(values["category"], names["categories"], "category")
            results = search_items(query, k=k, category=category)
        else:
            style = _parse_choice(values["style"], names["styles"], "style")
            found = search_looks(query, k=k, style=style, sha256=query.sha256)
            results, recognised = found.results, found.recognised
        if not _wants_json(request):
            query_image = _thumbnail_data_url(query.preview(THUMBNAIL_SIZE))
    except (UploadError, SearchRequestError) as problem:
        status, error = 400, str(problem)
    except ModelVersion.DoesNotExist as problem:
        status, error = 503, str(problem)

    if _wants_json(request):
        if error:
            return json_error(status, error)
        answer = {"results": [result.as_dict(lambda field: field.url) for result in results]}
        if tab == "looks":
            answer["recognised_item"] = recognised.as_dict(lambda field: field.url) if recognised else None
        return JsonResponse(answer)
    context = _search_context(
        request, tab, values=values, error=error, results=results, query_image=query_image,
        liked=liked_look_ids(request.user), recognised=recognised,
    )
    return render(request, "recommender/search.html", context, status=status)


# the same throttles and counters as the API's search
search_throttled = throttled(SearchAnonThrottle, SearchScopedThrottle, scope="search")


@require_http_methods(["GET", "POST"])
@search_throttled
def search_items_view(request):
    """Snapshot -> items. POST multipart `image`, optional `k` and `category`; `?format=json` answers JSON."""
    if request.method == "GET":
        return search_page_for(request, "items")
    return _run_search(request, "items")


@require_http_methods(["GET", "POST"])
@search_throttled
def search_looks_view(request):
    """Item -> looks. POST multipart `image`, optional `k` and `style`; `?format=json` answers JSON."""
    if request.method == "GET":
        return search_page_for(request, "looks")
    return _run_search(request, "looks")


def search_page_for(request, tab: str):
    return render(request, "recommender/search.html", _search_context(request, tab))


# --- catalogue photos -----------------------------------------------------------------------------------------

CATALOGUE_PHOTO_CACHE = "public, max-age=86400"


@require_GET
def catalogue_photo(request, name: str):
    """A catalogue photo (snapshot or item): public, cached a day by browsers and proxies."""
    return stored_file_response(request, clean_media_name("catalogue", name), CATALOGUE_PHOTO_CACHE)


# --- browsing the catalogue -----------------------------------------------------------------------------------


@require_GET
def looks_page(request):
    names = taxonomy()
    style = request.GET.get("style", "")
    looks = Look.objects.select_related("style").prefetch_related("snapshots").order_by("id")
    if style in names["styles"]:
        looks = looks.filter(style__name=style)
    else:
        style = ""
    liked = liked_look_ids(request.user)
    if request.GET.get("liked") and request.user.is_authenticated:
        looks = looks.filter(id__in=liked)
    page = Paginator(looks, LOOKS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "recommender/looks.html",
        {
            "page": page,
            "liked": liked,
            "style": style,
            "liked_only": bool(request.GET.get("liked")) and request.user.is_authenticated,
            "query": query.urlencode(),
            **names,
        },
    )


@require_GET
def look_page(request, look_id: int):
    look = get_object_or_404(Look.objects.select_related("style"), pk=look_id)
    items = look.items.select_related("category").order_by("id")
    return render(
        request,
        "recommender/look.html",
        {"look": look, "snapshots": look.snapshots.all(), "items": items, "liked": liked_look_ids(request.user),
         "categories": taxonomy()["categories"]},
    )


@require_POST
def item_category(request, item_id: int):
    """Staff confirm or change a catalogue item's category (kept as an admin label for the tagger)."""
    if not request.user.is_staff:
        return HttpResponseForbidden("only staff can correct the catalogue's categories")
    name = request.POST.get("category", "")
    category = Category.objects.filter(name=name).first()
    if category is None:
        return HttpResponseBadRequest(f"unknown category {name!r}; expected one of {', '.join(CATEGORIES)}")
    updated = set_item_category(item_id, category, CategorySource.ADMIN)
    if not updated:
        raise Http404("no such item")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        target = reverse("look", args=[updated.looks.order_by("id").values_list("id", flat=True).first()]) \
            if updated.looks.exists() else reverse("search")
    return redirect(target)
