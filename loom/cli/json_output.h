// The one JSON writer of the CLI's `--json` output: a protobuf message (a job, an event, the
// daemon's stats) as a JSON object whose numbers are JSON numbers (protobuf's own JSON mapping
// writes 64-bit integers as strings) and whose enums are the short names the tables print.
// Callers: the job commands (job_commands.cc), `loom stats` (stats_view.cc) and any command that
// prints a message; commands that print their own structures build nlohmann::json directly and
// print it with PrintJson.
#pragma once

#include <string>

#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"

namespace loom::cli {

// Field names as in the proto. Singular scalar fields are always present, at their default value
// too (a reader finds `"records": 0`, not a missing key); unset sub-messages are left out. Job
// states and stage kinds by the tables' short names ("succeeded", "measure"), other enums by
// their value name in lower case; bytes fields as "N bytes", never their content.
nlohmann::json ProtoJson(const google::protobuf::Message& m);

// `j` on stdout and a newline: one compact line (what JSON-lines output needs), or with `indent`
// >= 0, indented.
void PrintJson(const nlohmann::json& j, int indent = -1);

}  // namespace loom::cli
