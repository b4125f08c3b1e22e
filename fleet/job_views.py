"""The driver's phone page: ``/jobs/`` lists their open jobs with a button per next status.

Plain forms, no script (the site's CSP allows none inline, and a phone on a poor
connection should not need one). Dispatchers and admins see the organisation's open jobs
on the same page. The page and the API share ``fleet.jobs``.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from fleet import jobs
from fleet.models import JobStatus, Role
from fleet.selectors import membership_of, role_of

BUTTONS = {
    JobStatus.ASSIGNED: "Assign",
    JobStatus.EN_ROUTE: "On my way",
    JobStatus.ARRIVED: "Arrived",
    JobStatus.DONE: "Done",
    JobStatus.FAILED: "Could not do it",
}


@login_required
def jobs_page(request: HttpRequest) -> HttpResponse:
    visible = jobs.jobs_visible_to(request.user).prefetch_related("stops")
    open_jobs = list(visible.filter(status__in=jobs.OPEN_STATUSES).order_by("created", "pk"))
    for job in open_jobs:
        job.buttons = [(status, BUTTONS.get(status, status))
                       for status in jobs.next_statuses(job, request.user)]
    closed = list(visible.exclude(status__in=jobs.OPEN_STATUSES)
                  .order_by("-status_changed", "-pk")[:10])
    membership = membership_of(request.user)
    return render(request, "jobs/list.html", {
        "jobs": open_jobs, "closed": closed, "role": role_of(request.user),
        "time_zone": membership.organisation.time_zone if membership else "UTC",
    })


@login_required
@require_POST
def job_status(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(jobs.jobs_visible_to(request.user), pk=pk)
    status = request.POST.get("status", "")
    note = request.POST.get("note", "")[:500]
    if status not in JobStatus.values:
        messages.error(request, "Unknown status.")
    elif role_of(request.user) == Role.DRIVER and status not in jobs.DRIVER_STATUSES:
        messages.error(request, "A driver may set en route, arrived, done or failed.")
    else:
        try:
            jobs.change_status(job, status, by=request.user, note=note)
        except jobs.JobConflict as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"{job.title}: {JobStatus(status).label.lower()}.")
    return redirect("jobs")
