// Ed25519 signatures of compiled-model artifacts (artifact.h): SignArtifact for `loom compile
// --sign`, VerifyArtifactFiles for CompiledModel::Load with a verify key (`loom run --verify`).
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "loom/base/status_macros.h"
#include "loom/runtime/artifact.h"

namespace loom::runtime {
namespace {

// The files a signature covers, in manifest order.
const char* const kSignedFiles[] = {kArtifactLibraryFile, kArtifactPlanFile, kArtifactWeightsFile};

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

absl::StatusOr<std::string> Slurp(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path.string()));
  return ss.str();
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

std::string Manifest(const std::map<std::string, std::string>& files) {
  std::string m;
  for (const char* name : kSignedFiles) {
    auto it = files.find(name);
    absl::StrAppend(&m, Sha256Hex(it == files.end() ? "" : it->second), "  ", name, "\n");
  }
  return m;
}

// Reads an Ed25519 key from a PEM file: the private key (`want_private`), else the public key or
// the public half of a private key.
absl::StatusOr<Pkey> ReadKey(const std::string& path, bool want_private) {
  LOOM_ASSIGN_OR_RETURN(std::string pem, Slurp(path));
  auto read = [&](bool priv) -> EVP_PKEY* {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
    if (bio == nullptr) return nullptr;
    return priv ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)
                : PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
  };
  Pkey key(want_private ? read(true) : read(false));
  if (key == nullptr && !want_private) key.reset(read(true));
  if (key == nullptr || EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not an Ed25519 ", want_private ? "private" : "public",
        " key in PEM (make one with 'openssl genpkey -algorithm ed25519 -out KEY.pem' and "
        "'openssl pkey -in KEY.pem -pubout -out PUB.pem')"));
  }
  return key;
}

absl::Status WriteFile(const std::filesystem::path& path, std::string_view data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path.string()));
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  f.close();
  if (!f) return absl::DataLossError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

}  // namespace

absl::Status SignArtifact(const std::string& dir, const std::string& private_key) {
  LOOM_ASSIGN_OR_RETURN(Pkey key, ReadKey(private_key, /*want_private=*/true));
  const std::filesystem::path root(dir);
  std::map<std::string, std::string> files;
  for (const char* name : kSignedFiles) {
    LOOM_ASSIGN_OR_RETURN(files[name], Slurp(root / name));
  }
  const std::string manifest = Manifest(files);
  MdCtx ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (ctx == nullptr || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len,
                     reinterpret_cast<const unsigned char*>(manifest.data()),
                     manifest.size()) != 1) {
    return absl::InternalError("Ed25519 signing failed (OpenSSL)");
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(manifest.data()),
                     manifest.size()) != 1) {
    return absl::InternalError("Ed25519 signing failed (OpenSSL)");
  }
  sig.resize(len);
  LOOM_RETURN_IF_ERROR(WriteFile(root / kArtifactManifestFile, manifest));
  return WriteFile(root / kArtifactSignatureFile, sig);
}

absl::Status VerifyArtifactFiles(const std::string& dir, const std::string& public_key,
                                 const std::map<std::string, std::string>& files) {
  LOOM_ASSIGN_OR_RETURN(Pkey key, ReadKey(public_key, /*want_private=*/false));
  const std::filesystem::path root(dir);
  absl::StatusOr<std::string> manifest = Slurp(root / kArtifactManifestFile);
  absl::StatusOr<std::string> sig = Slurp(root / kArtifactSignatureFile);
  if (!manifest.ok() || !sig.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " is not signed (no ", kArtifactManifestFile, " and ", kArtifactSignatureFile,
        "): sign it with 'loom compile --sign KEY', or load it without --verify"));
  }
  MdCtx ctx(EVP_MD_CTX_new());
  if (ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1) {
    return absl::InternalError("Ed25519 verification failed to start (OpenSSL)");
  }
  if (EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig->data()), sig->size(),
                       reinterpret_cast<const unsigned char*>(manifest->data()),
                       manifest->size()) != 1) {
    return absl::PermissionDeniedError(
        absl::StrCat("the signature of ", dir, " does not verify with ", public_key,
                     ": the manifest was changed or signed with another key"));
  }
  // The signed manifest must be exactly the one these files give.
  const std::string want = Manifest(files);
  if (*manifest != want) {
    for (const std::string& line :
         std::vector<std::string>(absl::StrSplit(want, '\n', absl::SkipEmpty()))) {
      if (manifest->find(line) == std::string::npos) {
        const std::string name = line.substr(line.find("  ") + 2);
        return absl::PermissionDeniedError(absl::StrCat(
            dir, "/", name, " does not match the signed manifest: the artifact was changed"));
      }
    }
    return absl::PermissionDeniedError(
        absl::StrCat("the signed manifest of ", dir, " lists other files than the artifact's"));
  }
  return absl::OkStatus();
}

}  // namespace loom::runtime
