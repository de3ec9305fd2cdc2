"""The wardrobe's API: a user's items, liked looks and outfit suggestions (visible to that user alone: anyone
else's item is a 404)."""
from django.db.models import Prefetch
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from fashionsite.schema import error_response
from recommender.api.views import BadUpload
from recommender.models import Category, Look, Snapshot, Style
from recommender.services.uploads import UploadError
from wardrobe.api.serializers import (
    LikedLookSerializer,
    LikedLooksSerializer,
    LikeSerializer,
    SuggestionSerializer,
    SuggestionsSerializer,
    WardrobeItemSerializer,
    WardrobeItemsSerializer,
    WardrobeItemUpdateSerializer,
    WardrobeUploadSerializer,
)
from wardrobe.models import LikedLook, WardrobeItem
from wardrobe.services import (
    add_wardrobe_items,
    delete_wardrobe_item,
    get_suggestions,
    get_wardrobe_item,
    like_look,
    unlike_look,
    update_wardrobe_item,
    wardrobe_items,
    wardrobe_statuses,
)


_ACCEPTED = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "status": {"type": "string", "enum": ["pending", "ready", "failed"]}},
    "required": ["id", "status"],
}
ACCEPTED_ONE_OR_MANY = {"oneOf": [_ACCEPTED, {"type": "array", "items": _ACCEPTED}]}


class WardrobeItemsView(APIView):
    """The user's wardrobe. POST uploads one or several photos (each an `image` part); each is embedded by the
    workers, so it starts pending: poll its status."""

    permission_classes = [permissions.IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(operation_id="wardrobe_items_list", responses={200: WardrobeItemsSerializer})
    def get(self, request):
        items = wardrobe_items(request.user)
        return Response({"results": WardrobeItemSerializer(items, many=True, context={"request": request}).data})

    @extend_schema(
        request={"multipart/form-data": WardrobeUploadSerializer},
        responses={
            202: OpenApiResponse(
                ACCEPTED_ONE_OR_MANY, description="One {id, status}, or a list of them when several images were sent."
            )
        },
    )
    def post(self, request):
        files = request.FILES.getlist("image")
        data = {key: request.data.get(key) for key in ("category", "style") if request.data.get(key) is not None}
        serializer = WardrobeUploadSerializer(data={**data, "image": files})
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        try:
            items = add_wardrobe_items(
                request.user, files, category=values.get("category") or None, style=values.get("style") or None
            )
        except UploadError as error:
            raise BadUpload(str(error))
        except ValueError as error:
            raise ValidationError({"detail": str(error)})
        statuses = wardrobe_statuses(request.user)
        accepted = [{"id": item.id, "status": statuses.get(item.id, "pending")} for item in items]
        return Response(accepted[0] if len(accepted) == 1 else accepted, status=status.HTTP_202_ACCEPTED)


class WardrobeItemView(APIView):
    """One of the user's items (another user's is a 404). PATCH corrects its category or style."""

    permission_classes = [permissions.IsAuthenticated]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def _item(self, request, item_id):
        try:
            return get_wardrobe_item(request.user, item_id)
        except WardrobeItem.DoesNotExist:
            raise Http404("no such item in your wardrobe")

    @extend_schema(responses={200: WardrobeItemSerializer})
    def get(self, request, item_id):
        return Response(WardrobeItemSerializer(self._item(request, item_id), context={"request": request}).data)

    @extend_schema(request=WardrobeItemUpdateSerializer, responses={200: WardrobeItemSerializer})
    def patch(self, request, item_id):
        self._item(request, item_id)
        serializer = WardrobeItemUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        if not serializer.validated_data:
            raise ValidationError({"detail": ["nothing to change: send a category and/or a style"]})
        update_wardrobe_item(request.user, item_id, **serializer.validated_data)
        return self.get(request, item_id)

    @extend_schema(responses={204: None})
    def delete(self, request, item_id):
        try:
            delete_wardrobe_item(request.user, item_id)
        except WardrobeItem.DoesNotExist:
            raise Http404("no such item in your wardrobe")
        return Response(status=status.HTTP_204_NO_CONTENT)


class LikedLooksView(APIView):
    """The catalogue looks the user liked. POST {"look_id"} likes one (idempotent: 201 when new, else 200)."""

    permission_classes = [permissions.IsAuthenticated]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(operation_id="wardrobe_liked_looks_list", responses={200: LikedLooksSerializer})
    def get(self, request):
        likes = (
            LikedLook.objects.filter(user=request.user)
            .select_related("look", "look__style")
            .prefetch_related(Prefetch("look__snapshots", queryset=Snapshot.objects.order_by("id")))
            .order_by("-created", "-id")
        )
        return Response({"results": LikedLookSerializer(likes, many=True, context={"request": request}).data})

    @extend_schema(
        request=LikeSerializer,
        responses={201: LikedLookSerializer, 200: LikedLookSerializer, 404: error_response("No look with this id.")},
    )
    def post(self, request):
        serializer = LikeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        look_id = serializer.validated_data["look_id"]
        existed = LikedLook.objects.filter(user=request.user, look_id=look_id).exists()
        try:
            like = like_look(request.user, look_id)
        except Look.DoesNotExist:
            raise Http404(f"no look {look_id}")
        return Response(
            LikedLookSerializer(like, context={"request": request}).data,
            status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED,
        )


class LikedLookView(APIView):
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses={204: None})
    def delete(self, request, look_id):
        """Unlikes a look (idempotent: 204 whether or not it was liked)."""
        unlike_look(request.user, look_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _filter(request, name: str, model) -> str | None:
    """A query parameter: absent -> None (the user's saved preference), "" -> no filter, unknown -> 400."""
    if name not in request.query_params:
        return None
    value = request.query_params[name].strip()
    if "\x00" in value:
        raise ValidationError({name: ["null characters are not allowed"]})
    if value and not model.objects.filter(name=value).exists():
        raise ValidationError({"detail": f"unknown {name} {value!r}"})
    return value


class SuggestionPages(PageNumberPagination):
    """`page` (from 1) and `page_size` (12 unless given, at most 48); the `next` and `previous` links keep
    every other query parameter, so the filters hold across pages."""

    page_size = 12
    page_size_query_param = "page_size"
    max_page_size = 48

    def get_page_size(self, request):
        """A `page_size` that is not a whole number from 1 is a 400 (DRF would fall back to the default)."""
        self._check_whole_number(request, self.page_size_query_param, f"a whole number from 1 to {self.max_page_size}")
        return super().get_page_size(request)

    def get_page_number(self, request, paginator):
        """A `page` that is not a whole number from 1 is a 400 (DRF would read an empty one as page 1)."""
        self._check_whole_number(request, self.page_query_param, "a whole number from 1")
        return super().get_page_number(request, paginator)

    @staticmethod
    def _check_whole_number(request, name: str, expected: str) -> None:
        """Given once, a whole number from 1; given twice (?page=1&page=2) it is ambiguous, so also a 400. ASCII
        digits only: "³" is a digit to str.isdigit() but not a number to int()."""
        values = request.query_params.getlist(name)
        if values and (len(values) > 1 or not (values[0].isascii() and values[0].isdigit() and int(values[0]) >= 1)):
            raise ValidationError({name: [expected]})


class SuggestionsView(APIView):
    """The user's outfit suggestions, best first, a page at a time (`count`, `next`, `previous`, `results`).
    `style` filters by the look's style, `category` by the category of the items that complete it; leave a
    parameter out to use the saved preference, pass it empty (`?style=`) for no filter."""

    permission_classes = [permissions.IsAuthenticated]
    pagination_class = SuggestionPages

    @extend_schema(
        parameters=[
            OpenApiParameter("style", OpenApiTypes.STR, description="A style name; empty for all styles."),
            OpenApiParameter("category", OpenApiTypes.STR, description="A category name; empty for all."),
            OpenApiParameter("page", OpenApiTypes.INT, description="The page, from 1 (a page past the last: 404)."),
            OpenApiParameter(
                "page_size", OpenApiTypes.INT, description=f"Suggestions a page (default {SuggestionPages.page_size}, "
                f"at most {SuggestionPages.max_page_size})."
            ),
        ],
        responses={200: SuggestionsSerializer},
    )
    def get(self, request):
        style = _filter(request, "style", Style)
        category = _filter(request, "category", Category)
        if style is None or category is None:
            from wardrobe.services import get_preferences

            preferences = get_preferences(request.user)
            if style is None:
                style = preferences.style.name if preferences.style_id else ""
            if category is None:
                category = preferences.category.name if preferences.category_id else ""
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            get_suggestions(request.user, style=style, category=category), request, view=self
        )

        def with_filters(link):
            """The link with the filters in force spelled out, so a saved default changed meanwhile cannot
            swap them between pages."""
            return link and replace_query_param(replace_query_param(link, "style", style), "category", category)

        results = SuggestionSerializer(page, many=True, context={"request": request}).data
        return Response(
            {
                "count": paginator.page.paginator.count,
                "next": with_filters(paginator.get_next_link()),
                "previous": with_filters(paginator.get_previous_link()),
                "style": style,
                "category": category,
                "results": results,
            }
        )
