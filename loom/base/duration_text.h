// Durations as people read them, in one short word: the one formatter of the CLI's job views
// (`loom status`, `watch`, `top`, `stats`: cli/job_view.h) and the daemon's web pages
// (service/http_pages.cc), so an ETA reads the same in a terminal and in a browser.
#pragma once

#include <string>

namespace loom::base {

// Rounded to the second: 42 -> "42s", 125 -> "2m05s", 7260 -> "2h01m"; negative or non-finite
// (an unknown figure) -> "-".
std::string DurationText(double seconds);

}  // namespace loom::base
