"""The catalogue's API: registration and tokens, the two searches (open to anonymous users, throttled) and
the staff-only re-embedding."""
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import APIException, Throttled
from rest_framework.generics import get_object_or_404
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle
from rest_framework.views import APIView

from accounts.throttling import FailedLogins, LoginThrottle, RegisterThrottle
from fashionsite.schema import error_response
from fashionsite.throttling import LiveRateMixin, client_address
from recommender.api.serializers import (
    CredentialsSerializer,
    ItemResultsSerializer,
    ItemSearchSerializer,
    JobSerializer,
    LookResultsSerializer,
    LookSearchSerializer,
    ReembedSerializer,
    RegisterSerializer,
    TokenSerializer,
    UserSerializer,
    absolute_url,
)
from recommender.models import ReembedJob
from recommender.services.reembedding import ReembeddingInProgress, refresh_progress, start_reembedding
from recommender.services.search import search_items, search_looks
from recommender.services.uploads import UploadError, check_query


class SearchAnonThrottle(LiveRateMixin, AnonRateThrottle):
    """Anonymous searches, per client address ("search_anon" rate)."""

    scope = "search_anon"


class SearchScopedThrottle(LiveRateMixin, ScopedRateThrottle):
    """Every search, per user or address ("search" rate)."""


class BadUpload(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "the upload is not a usable image"
    default_code = "bad_upload"


def checked_query(serializer):
    """The validated query upload, checked (size, format, pixels); a bad upload is a 400 naming the problem."""
    try:
        return check_query(serializer.validated_data["image"])
    except UploadError as error:
        raise BadUpload(str(error))


def searched(search, *args, **kwargs):
    """search(*args, **kwargs); a query whose pixels turn out corrupt or truncated (the search decodes them,
    once) is a 400 naming the problem, as a bad header is."""
    try:
        return search(*args, **kwargs)
    except UploadError as error:
        raise BadUpload(str(error))


class RegisterView(APIView):
    """Creates an account (the same checks as the page's form: a free username, Django's password validators)."""

    permission_classes = [permissions.AllowAny]
    authentication_classes = []
    throttle_classes = [RegisterThrottle]

    @extend_schema(request=RegisterSerializer, responses={201: UserSerializer})
    def post(self, request):
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = serializer.save()
        return Response({"id": user.id, "username": user.username}, status=status.HTTP_201_CREATED)


class TokenView(APIView):
    """Exchanges a username and password for the user's API token (Authorization: Token ...)."""

    permission_classes = [permissions.AllowAny]
    authentication_classes = []
    throttle_classes = [LoginThrottle]

    @extend_schema(request=CredentialsSerializer, responses={200: TokenSerializer})
    def post(self, request):
        from rest_framework.authtoken.serializers import AuthTokenSerializer

        username = request.data.get("username", "") if hasattr(request.data, "get") else ""
        wait = FailedLogins.wait(str(username), client_address(request))
        if wait:
            raise Throttled(wait, "too many failed sign-ins for this account or from this address")
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        token, _ = Token.objects.get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key})


class _SearchView(APIView):
    permission_classes = [permissions.AllowAny]
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [SearchAnonThrottle, SearchScopedThrottle]
    throttle_scope = "search"


class ItemSearchView(_SearchView):
    """Snapshot -> items: the k catalogue items that go with a street snapshot, optionally of one category."""

    @extend_schema(request={"multipart/form-data": ItemSearchSerializer}, responses={200: ItemResultsSerializer})
    def post(self, request):
        serializer = ItemSearchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        query = checked_query(serializer)
        data = serializer.validated_data
        results = searched(search_items, query, k=data.get("k", 6), category=data.get("category") or None)
        return Response({"results": [r.as_dict(lambda field: absolute_url(request, field)) for r in results]})


class LookSearchView(_SearchView):
    """Item -> looks: the k looks (through their closest snapshot) that suit an item, optionally of a style."""

    @extend_schema(request={"multipart/form-data": LookSearchSerializer}, responses={200: LookResultsSerializer})
    def post(self, request):
        serializer = LookSearchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        query = checked_query(serializer)
        data = serializer.validated_data
        found = searched(search_looks, query, k=data.get("k", 6), style=data.get("style") or None, sha256=query.sha256)
        url = lambda field: absolute_url(request, field)  # noqa: E731
        return Response({"results": [r.as_dict(url) for r in found.results],
                         "recognised_item": found.recognised.as_dict(url) if found.recognised else None})


class ReembeddingConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "reembedding_in_progress"


class ReembedView(APIView):
    """Staff only: re-embeds every image with a model version through the workers; the version becomes active
    when every image has its new descriptor (the old one keeps serving meanwhile)."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        request=ReembedSerializer,
        responses={202: JobSerializer, 409: error_response("Another re-embedding is running.")},
    )
    def post(self, request):
        serializer = ReembedSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            job = start_reembedding(serializer.validated_data["model_version"])
        except ReembeddingInProgress as error:
            raise ReembeddingConflict(str(error))
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class JobView(APIView):
    """Staff only: a re-embedding job's progress."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(responses={200: JobSerializer})
    def get(self, request, job_id):
        job = get_object_or_404(ReembedJob.objects.select_related("model_version"), pk=job_id)
        if job.state == ReembedJob.State.RUNNING:
            refresh_progress(job)
        return Response(JobSerializer(job).data)
