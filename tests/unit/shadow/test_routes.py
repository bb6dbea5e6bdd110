"""Route templates from URLs (shadow/routes.py)."""

from __future__ import annotations

import pytest

from shadow.routes import route_template


@pytest.mark.parametrize("url, route", [
    ("/users/42", "/users/{id}"),
    ("/users/42/orders/7?x=1", "/users/{id}/orders/{id}"),
    ("/o/123e4567-e89b-12d3-a456-426614174000", "/o/{id}"),
    ("/blob/9f86d081884c7d65", "/blob/{id}"),
    ("/x/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/x/{id}"),
    ("/categories", "/categories"),
    ("/search?q=lamp", "/search"),
    ("/v2/users", "/v2/users"),
    ("/", "/"),
])
def test_route_templates(url: str, route: str) -> None:
    assert route_template(url) == route
