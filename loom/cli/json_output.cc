#include "loom/cli/json_output.h"

#include <cstdio>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "loom/tune/stage_wire.h"
#include "loom/v1/jobs.pb.h"
#include "loom/v1/stage_names.h"

namespace loom::cli {

nlohmann::json ProtoJson(const google::protobuf::Message& m) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Descriptor* d = m.GetDescriptor();
  const google::protobuf::Reflection* r = m.GetReflection();
  nlohmann::json j = nlohmann::json::object();
  for (int k = 0; k < d->field_count(); ++k) {
    const FieldDescriptor* f = d->field(k);
    const bool rep = f->is_repeated();
    // Unset messages and unset members of a oneof (or of `optional`) stay out; scalars do not.
    if (!rep && f->has_presence() && !r->HasField(m, f)) continue;
    auto value = [&](int i) -> nlohmann::json {
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          return rep ? r->GetRepeatedInt32(m, f, i) : r->GetInt32(m, f);
        case FieldDescriptor::CPPTYPE_INT64:
          return rep ? r->GetRepeatedInt64(m, f, i) : r->GetInt64(m, f);
        case FieldDescriptor::CPPTYPE_UINT32:
          return rep ? r->GetRepeatedUInt32(m, f, i) : r->GetUInt32(m, f);
        case FieldDescriptor::CPPTYPE_UINT64:
          return rep ? r->GetRepeatedUInt64(m, f, i) : r->GetUInt64(m, f);
        case FieldDescriptor::CPPTYPE_DOUBLE:
          return rep ? r->GetRepeatedDouble(m, f, i) : r->GetDouble(m, f);
        case FieldDescriptor::CPPTYPE_FLOAT:
          return rep ? r->GetRepeatedFloat(m, f, i) : r->GetFloat(m, f);
        case FieldDescriptor::CPPTYPE_BOOL:
          return rep ? r->GetRepeatedBool(m, f, i) : r->GetBool(m, f);
        case FieldDescriptor::CPPTYPE_STRING: {
          // Bytes (an uploaded model) are summarized, not dumped.
          const std::string s = rep ? r->GetRepeatedString(m, f, i) : r->GetString(m, f);
          if (f->type() == FieldDescriptor::TYPE_BYTES) return absl::StrCat(s.size(), " bytes");
          return s;
        }
        case FieldDescriptor::CPPTYPE_ENUM: {
          const int v = rep ? r->GetRepeatedEnumValue(m, f, i) : r->GetEnumValue(m, f);
          if (f->enum_type() == v1::JobState_descriptor()) {
            return v1::JobStateShortName(static_cast<v1::JobState>(v));
          }
          if (f->enum_type() == v1::StageKind_descriptor()) {
            return tune::WireKindName(static_cast<v1::StageKind>(v));
          }
          const google::protobuf::EnumValueDescriptor* e = f->enum_type()->FindValueByNumber(v);
          return e == nullptr ? nlohmann::json(v)
                              : nlohmann::json(absl::AsciiStrToLower(e->name()));
        }
        case FieldDescriptor::CPPTYPE_MESSAGE:
          return ProtoJson(rep ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f));
      }
      return nullptr;
    };
    if (rep) {
      nlohmann::json a = nlohmann::json::array();
      for (int i = 0; i < r->FieldSize(m, f); ++i) a.push_back(value(i));
      j[f->name()] = std::move(a);
    } else {
      j[f->name()] = value(-1);
    }
  }
  return j;
}

void PrintJson(const nlohmann::json& j, int indent) { std::printf("%s\n", j.dump(indent).c_str()); }

}  // namespace loom::cli
