"""Headless Chromium for the end-to-end tests in tests/web/ (web_test.py, charts_test.py): Debian's
chromium and chromium-driver, driven by python3-selenium. A test without one of them is skipped,
not failed."""
import os
import shutil


def headless_chromium(test, profile_dir, width=1280, height=900):
    """A selenium WebDriver on headless Chromium with a fresh profile under `profile_dir`, quit
    when `test` (a unittest.TestCase) is cleaned up; skips `test` when a tool is absent."""
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        test.skipTest("python3-selenium is not installed")
    if not chromium or not driver_path:
        test.skipTest("chromium or chromedriver is not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--hide-scrollbars", f"--user-data-dir={os.path.join(profile_dir, 'chrome')}",
              f"--window-size={width},{height}"):
        opts.add_argument(a)
    browser = webdriver.Chrome(service=Service(driver_path), options=opts)
    test.addCleanup(browser.quit)
    return browser
