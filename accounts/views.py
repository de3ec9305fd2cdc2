"""Registering and signing in on the pages (the API's twins are in recommender.api.views): both throttled."""
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect, render
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_http_methods

from accounts.forms import RegisterForm
from accounts.throttling import FailedLogins, LoginThrottle, RegisterThrottle
from fashionsite.throttling import client_address, throttled, too_many_requests

BACKEND = "accounts.backends.ThrottledModelBackend"


@require_http_methods(["GET", "POST"])
@throttled(RegisterThrottle)
def register(request):
    form = RegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend=BACKEND)
        return redirect("wardrobe")
    return render(request, "registration/register.html", {"form": form}, status=400 if form.errors else 200)


class LoginView(auth_views.LoginView):
    @method_decorator(throttled(LoginThrottle))
    def post(self, request, *args, **kwargs):
        wait = FailedLogins.wait(request.POST.get("username", ""), client_address(request))
        if wait:
            return too_many_requests(request, wait, "too many failed sign-ins for this account or from this address")
        return super().post(request, *args, **kwargs)
