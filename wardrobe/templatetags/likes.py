"""`{% like_button look %}`: the Like / Unlike form of a look, for a signed-in user (nothing otherwise).

A tag in Python rather than an included template: the looks page shows 24 of them, and rendering the include
cost about as much CPU as the rest of the page together (13 of ~30 ms of a request thread under load,
docs/RESULTS.md "Issue 10: load, session 12"). The context needs `user`, `request`, `liked` (the ids of the
looks the user likes) and the CSRF token that every page's context has."""
from django import template
from django.template.defaulttags import CsrfTokenNode
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()


@register.simple_tag(takes_context=True)
def like_button(context, look):
    user = context.get("user")
    if user is None or not user.is_authenticated:
        return ""
    liked = look.id in (context.get("liked") or ())
    csrf = CsrfTokenNode().render(context)  # what {% csrf_token %} renders
    back = f"{context['request'].get_full_path()}#look-{look.id}"
    if liked:
        action, css, testid, title, label = reverse("look-unlike", args=[look.id]), "like liked", "unlike", "Unlike", mark_safe("&#9829; Liked")
    else:
        action, css, testid, title, label = reverse("look-like", args=[look.id]), "like", "like", "Like", mark_safe("&#9825; Like")
    return format_html(
        '<form method="post" action="{}" class="inline like-form">{}\n'
        '  <input type="hidden" name="next" value="{}">\n'
        '  <button type="submit" class="{}" data-testid="{}" title="{}">{}</button>\n'
        '</form>',
        action, csrf, back, css, testid, title, label,  # label: a fixed entity and word
    )

