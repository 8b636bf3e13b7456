"""Logging in and out through the real pages, in Chromium, with the keyboard."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import TEST_PASSWORD

pytestmark = pytest.mark.browser


def test_wrong_password_then_login_shows_home_with_full_name(page, live_server, make_user, shot):
    make_user("amina", "reception", full_name="Amina Bibi")

    page.goto("/")
    # The home page needs a login; the browser lands on the login form.
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.get_by_role("heading", name="Log in to HMS")).to_be_visible()
    username = page.locator("input[name=username]")
    password = page.locator("input[name=password]")
    # Autofocus on the username: staff can start typing the moment the page opens.
    expect(username).to_be_focused()
    shot("login-page")

    page.keyboard.type("amina")
    page.keyboard.press("Tab")
    expect(password).to_be_focused()
    page.keyboard.type("not-the-password")
    page.keyboard.press("Enter")

    alert = page.get_by_role("alert")
    expect(alert).to_have_text("Unknown username or wrong password.")
    # The username is kept so only the password needs retyping; the password is not echoed back.
    expect(username).to_have_value("amina")
    expect(password).to_have_value("")
    expect(page.get_by_text("Amina Bibi")).to_have_count(0)
    shot("wrong-password")

    password.focus()
    page.keyboard.type(TEST_PASSWORD)
    page.keyboard.press("Enter")

    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Amina Bibi")
    # The top bar says who is logged in and offers a way out.
    topbar = page.locator("header.topbar")
    expect(topbar).to_contain_text("Amina Bibi")
    expect(topbar.get_by_role("button", name="Log out")).to_be_visible()
    expect(page.locator("main")).to_contain_text("reception")
    shot("home")


def test_log_out_returns_to_login_and_protects_home(page, live_server, make_user, log_in, shot):
    make_user("bilal", "doctor", full_name="Dr Bilal Ahmed")
    log_in("bilal")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Dr Bilal Ahmed")

    page.get_by_role("button", name="Log out").click()

    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("status")).to_have_text("You have logged out.")
    shot("logged-out")
    # The session is gone: the home page sends the browser back to the login form.
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.get_by_text("Dr Bilal Ahmed")).to_have_count(0)
