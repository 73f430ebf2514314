// dnamba: character-level Mamba DNA models over FASTA, BAM/CRAM and VCF/BCF.
#include <cstring>
#include <iostream>
#include <map>
#include <string>

#include "cli/common.h"
#include "common/error.h"

namespace {

struct Command {
  dnamba::cli::CommandFn fn;
  const char* summary;
};

const std::map<std::string, Command>& commands() {
  static const std::map<std::string, Command> m = {
      {"track", {dnamba::cli::cmd_track, "per-base model values over a reference (bedGraph)"}},
      {"embed", {dnamba::cli::cmd_embed, "hidden states over a reference or reads (Zarr, npy)"}},
      {"info", {dnamba::cli::cmd_info, "describe a model directory"}},
      {"train", {dnamba::cli::cmd_train, "train a Mamba model on genomes (next-base prediction)"}},
      {"score", {dnamba::cli::cmd_score, "variant-effect scores for a VCF/BCF (INFO DNAMBA_LLR)"}},
  };
  return m;
}

void usage(std::ostream& o) {
  o << "dnamba " << DNAMBA_VERSION << ": character-level Mamba DNA language models on genomes\n\n"
    << "Usage: dnamba <command> [options]    (dnamba <command> --help for its options)\n\nCommands:\n";
  for (auto& [name, c] : commands()) o << "  " << name << std::string(10 - name.size(), ' ') << c.summary << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(std::cerr);
    return 1;
  }
  std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    usage(std::cout);
    return 0;
  }
  if (cmd == "--version" || cmd == "version") {
    std::cout << "dnamba " << DNAMBA_VERSION << "\n";
    return 0;
  }
  auto it = commands().find(cmd);
  if (it == commands().end()) {
    std::cerr << "dnamba: unknown command '" << cmd << "'\n";
    usage(std::cerr);
    return 1;
  }
  try {
    return it->second.fn(argc - 1, argv + 1);
  } catch (const dnamba::Error& e) {
    std::cerr << "dnamba " << cmd << ": error: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "dnamba " << cmd << ": error: out of memory (try a smaller --chunk)\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "dnamba " << cmd << ": error: " << e.what() << "\n";
    return 1;
  }
}
