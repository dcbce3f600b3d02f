"""Shadow-comparison tests (a package, so its conftest is not imported as a bare ``conftest``)."""
