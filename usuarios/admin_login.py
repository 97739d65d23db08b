"""The admin's login page with the API login's limits on failed attempts (usuarios.throttling).

Without them the admin's form was a way around the API's limits: the same accounts,
guessed at without end. Failures count in the same places (per client address, per
account of the clinic), so attempts on either door add up.
"""
from __future__ import annotations

import math

from django.contrib import admin
from django.template.response import TemplateResponse

from usuarios.throttling import LoginAccountThrottle, LoginAddressThrottle, LoginThrottled


class _FormAttempt:
    """The admin's login form as the throttles read a request: its address and its account."""

    def __init__(self, request):
        self.META, self.headers = request.META, request.headers
        self.data = {"email": request.POST.get("username", "")}


def admin_login(request, extra_context=None):
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    attempt = _FormAttempt(request)
    throttles = [LoginAddressThrottle(), LoginAccountThrottle()]
    waits = [throttle.wait() or 1 for throttle in throttles if not throttle.allow_request(attempt, None)]
    if waits:
        # Refused before the password is checked: the right one cannot be told from a wrong one meanwhile.
        response = TemplateResponse(request, "usuarios/admin_login_throttled.html",
                                    {**admin.site.each_context(request), "title": LoginThrottled.default_detail,
                                     "message": LoginThrottled.default_detail}, status=429)
        response["Retry-After"] = str(max(1, math.ceil(max(waits))))
        return response
    response = admin.site.login(request, extra_context)
    if response.status_code == 200:  # the form again, with its error: a failed attempt (success redirects)
        for throttle in throttles:
            throttle.failure_record(attempt, None)
    return response
