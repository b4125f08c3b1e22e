"""Page numbers for ordinary lists; keyset cursors for positions and the feed.

Positions are ordered by a time and the id, and a page starts strictly after the last
row of the previous one, so rows inserted meanwhile can neither shift a page (as with
offsets) nor be returned twice.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime

from django.conf import settings
from django.core.paginator import InvalidPage
from django.db.models import Q, QuerySet
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import BasePagination, PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param


class PagePagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000

    def paginate_queryset(self, queryset: QuerySet, request: Request, view=None,
                          fetch: Callable[[QuerySet], list] | None = None) -> list | None:
        """DRF's page, or with ``fetch`` what it makes of the page's queryset (plain rows
        instead of model instances, e.g. ``fleet.api.rows.vehicle_rows``)."""
        if fetch is None:
            return super().paginate_queryset(queryset, request, view)
        self.request = request
        page_size = self.get_page_size(request)
        if not page_size:
            return None
        paginator = self.django_paginator_class(queryset, page_size)
        page_number = self.get_page_number(request, paginator)
        rows = None
        if str(page_number).isdigit() and 1 <= int(page_number) <= 10**9:
            # One row more than the page: a page that is not full tells the count, so
            # the usual case (the whole fleet on one page) needs no COUNT query.
            offset = (int(page_number) - 1) * page_size
            rows = fetch(queryset[offset:offset + page_size + 1])
            if len(rows) <= page_size and (rows or offset == 0):
                paginator.__dict__["count"] = offset + len(rows)  # Paginator.count, known
            rows = rows[:page_size]
        try:
            self.page = paginator.page(page_number)
        except InvalidPage as error:
            raise NotFound(self.invalid_page_message.format(
                page_number=page_number, message=str(error))) from error
        return rows if rows is not None else fetch(self.page.object_list)


def encode_cursor(time: datetime, pk: int) -> str:
    text = f"{time.astimezone(UTC).isoformat()}|{pk}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, param: str) -> tuple[datetime, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        time_text, pk_text = text.split("|")
        time, pk = datetime.fromisoformat(time_text), int(pk_text)
        if time.tzinfo is None or pk < 0 or pk >= 2**63:
            raise ValueError(text)
    except (ValueError, UnicodeDecodeError, binascii.Error) as error:
        raise ValidationError({param: ["Not a cursor this API returned."]}) from error
    return time, pk


class KeysetPagination(BasePagination):
    """Pages of ``page_size`` rows ordered by (``time_field``, id), resumed by a cursor.

    ``next`` is null once there is nothing more; a feed (``always_next``) always returns
    it, since new rows may arrive after the last one.
    """

    time_field = "fix_time"
    cursor_query_param = "cursor"
    page_size_query_param = "page_size"
    always_next = False
    # Where a client without a cursor starts; a feed sets it so that even an empty first
    # page hands out a cursor to poll with.
    start_position: tuple[datetime, int] | None = None

    def __init__(self, time_field: str | None = None, cursor_query_param: str | None = None,
                 always_next: bool | None = None):
        self.time_field = time_field or self.time_field
        self.cursor_query_param = cursor_query_param or self.cursor_query_param
        if always_next is not None:
            self.always_next = always_next

    @property
    def max_page_size(self) -> int:
        return settings.API_POSITIONS_MAX_PAGE_SIZE

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw in (None, ""):
            return self.max_page_size
        try:
            size = int(raw)
            if size < 1:
                raise ValueError(raw)
        except ValueError as error:
            raise ValidationError(
                {self.page_size_query_param: ["A whole number of at least 1."]}
            ) from error
        return min(size, self.max_page_size)

    def paginate_queryset(self, queryset: QuerySet, request: Request, view=None,
                          fetch: Callable[[QuerySet], list] | None = None) -> list:
        """One page: model instances, or whatever ``fetch`` makes of the page's queryset
        (rows with the time field and ``id`` as attributes, e.g. ``fleet.api.rows``)."""
        self.request = request
        self.page_size = self.get_page_size(request)
        raw = request.query_params.get(self.cursor_query_param)
        self.position = (
            decode_cursor(raw, self.cursor_query_param) if raw else self.start_position
        )
        queryset = queryset.order_by(self.time_field, "id")
        if self.position is not None:
            time, pk = self.position
            # ">= time" first lets an index on (time, id) do a range scan.
            queryset = queryset.filter(
                Q(**{f"{self.time_field}__gte": time})
                & (Q(**{f"{self.time_field}__gt": time}) | Q(id__gt=pk))
            )
        page = queryset[: self.page_size + 1]
        rows = fetch(page) if fetch is not None else list(page)
        self.has_more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        if rows:
            last = rows[-1]
            # A model's primary key; a plain row's "id".
            self.position = (getattr(last, self.time_field), getattr(last, "pk", None) or last.id)
        return rows

    def next_cursor(self) -> str | None:
        if self.position is None or not (self.has_more or self.always_next):
            return None
        return encode_cursor(*self.position)

    def get_next_link(self, extra_params: dict[str, str] | None = None) -> str | None:
        cursor = self.next_cursor()
        if cursor is None:
            return None
        url = self.request.build_absolute_uri()
        for name, value in (extra_params or {}).items():
            url = replace_query_param(url, name, value)
        return replace_query_param(url, self.cursor_query_param, cursor)

    def get_paginated_response(self, data, extra_params: dict[str, str] | None = None):
        next_link = self.get_next_link(extra_params)
        body = {"next": next_link, "has_more": self.has_more, "results": data}
        headers = {"Link": f'<{next_link}>; rel="next"'} if next_link else {}
        return Response(body, headers=headers)
