"""The API page (``GET /``) in headless Chromium: Swagger UI draws the service's operations from
files the service ships, under a policy that allows this origin only (the page fixture fails on any
console error, a refused script or style included)."""

from __future__ import annotations


def operation_paths(page) -> list[str]:
    from selenium.webdriver.common.by import By

    elements = page.driver.find_elements(By.CSS_SELECTOR, "[data-testid='api-docs'] .opblock-summary-path[data-path]")
    return [element.get_attribute("data-path") for element in elements]


def test_the_api_page_draws_every_operation(page):
    page.open("/")
    paths = page.wait(lambda: operation_paths(page), message="Swagger UI's operations")
    assert {"/predict", "/predict_batch", "/explain", "/jobs", "/version", "/readyz"} <= set(paths), paths
    assert page.driver.execute_script("return typeof SwaggerUIBundle") == "function"
    page.screenshot("api-page")
