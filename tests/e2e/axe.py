"""axe-core (vendored from its npm package) run in the page: the serious and critical violations."""

from pathlib import Path

AXE = (Path(__file__).parent / "vendor" / "axe-core-4.14.1.min.js").read_text()
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def serious_violations(page) -> list[str]:
    page.evaluate(AXE)  # evaluated through the devtools protocol, so the page's CSP allows it
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("critical", "serious")
    ]
