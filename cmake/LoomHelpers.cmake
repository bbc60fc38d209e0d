# Module build rules. Each loom/<module>/ folder holds header, source, test, benchmark and fuzzer
# of a unit side by side; the rules below pick them up by suffix so adding a unit needs no edit:
#   foo.cc            -> library loom_<module>
#   foo_test.cc       -> test binary loom_<module>_foo_test (registered in CTest)
#   foo_benchmark.cc  -> benchmark binary <module>_foo_benchmark (run by hand / bench scripts)
#   foo_fuzzer.cc     -> libFuzzer target <module>_foo_fuzzer (fuzz preset only); when
#                        tests/data/fuzz/<module>_foo_fuzzer/ holds its seed corpus, that corpus
#                        also runs as the test <module>_foo_fuzzer_corpus in every preset (without
#                        libFuzzer through cmake/fuzz_corpus_main.cc, with it as `-runs=0`).
# DEPS: what the module's sources need, linked PRIVATE (a static library still passes them on to
# the final link, but not their include folders and definitions); PUBLIC_DEPS: what the module's
# headers include, which every user of the module then compiles against. A dependency goes in
# PUBLIC_DEPS only when a header needs it. Which loom modules a module may include at all is
# cmake/layering.txt, checked by the CTest loom_layering (all loom headers share one include
# root, so the compiler alone cannot refuse a forbidden loom include).
# TEST_DEPS: what the module's tests and benchmarks link besides the module (testing/ libraries).
# FUZZ_DEPS: link a module's fuzzers with only the unit they fuzz (foo.cc beside foo_fuzzer.cc)
# and these libraries, instead of the whole module, so that a parser deep in a large module
# (the experiment spec) does not make the fuzz preset build everything the module needs.

function(loom_module name)
  cmake_parse_arguments(ARG "" "" "DEPS;PUBLIC_DEPS;TEST_DEPS;EXCLUDE;FUZZ_DEPS" ${ARGN})
  file(GLOB all_cc CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cc)
  set(lib_srcs "")
  set(test_srcs "")
  set(bench_srcs "")
  set(fuzz_srcs "")
  foreach(f ${all_cc})
    get_filename_component(base ${f} NAME)
    if(base IN_LIST ARG_EXCLUDE)
      continue()
    elseif(base MATCHES "_test\\.cc$")
      list(APPEND test_srcs ${f})
    elseif(base MATCHES "_benchmark\\.cc$")
      list(APPEND bench_srcs ${f})
    elseif(base MATCHES "_fuzzer\\.cc$")
      list(APPEND fuzz_srcs ${f})
    else()
      list(APPEND lib_srcs ${f})
    endif()
  endforeach()

  if(lib_srcs)
    add_library(loom_${name} STATIC ${lib_srcs})
    target_include_directories(loom_${name} PUBLIC ${PROJECT_SOURCE_DIR})
    target_link_libraries(loom_${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_DEPS})
  else()  # header-only so far: whatever it needs, its users need
    add_library(loom_${name} INTERFACE)
    target_include_directories(loom_${name} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(loom_${name} INTERFACE ${ARG_PUBLIC_DEPS} ${ARG_DEPS})
  endif()

  if(LOOM_BUILD_TESTS)
    foreach(t ${test_srcs})
      get_filename_component(stem ${t} NAME_WE)
      set(target loom_${name}_${stem})
      add_executable(${target} ${t})
      target_link_libraries(${target} PRIVATE loom_${name} ${ARG_TEST_DEPS}
                            GTest::gmock GTest::gtest_main)
      # Tests that read committed files (seed corpora, example specs) find them from the source
      # folder, never through __FILE__ (which ccache's base_dir makes relative).
      target_compile_definitions(${target} PRIVATE LOOM_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
      gtest_discover_tests(${target}
        PROPERTIES TIMEOUT 600
                   ENVIRONMENT "LOOM_SHARED_DIR=${PROJECT_SOURCE_DIR}/../shared"
                   # A second variable must be a separate property: gtest_discover_tests splits
                   # a list-valued ENVIRONMENT at ';' and keeps only the first entry.
                   ENVIRONMENT_MODIFICATION "LOOM_BUILD_DIR=set:${PROJECT_BINARY_DIR}"
        DISCOVERY_TIMEOUT 120)
    endforeach()
  endif()

  if(LOOM_BUILD_BENCHMARKS)
    foreach(b ${bench_srcs})
      get_filename_component(stem ${b} NAME_WE)
      add_executable(${name}_${stem} ${b})
      target_link_libraries(${name}_${stem} PRIVATE loom_${name} ${ARG_TEST_DEPS}
                            benchmark::benchmark)
    endforeach()
  endif()

  foreach(z ${fuzz_srcs})
    get_filename_component(stem ${z} NAME_WE)
    set(fuzz_srcs_of ${z})
    set(fuzz_libs loom_${name} ${ARG_TEST_DEPS})
    if(ARG_FUZZ_DEPS)
      string(REGEX REPLACE "_fuzzer\\.cc$" ".cc" unit ${z})
      list(APPEND fuzz_srcs_of ${unit})
      set(fuzz_libs ${ARG_FUZZ_DEPS})
    endif()
    set(corpus ${PROJECT_SOURCE_DIR}/tests/data/fuzz/${name}_${stem})
    if(LOOM_BUILD_FUZZERS)
      add_executable(${name}_${stem} ${fuzz_srcs_of})
      target_include_directories(${name}_${stem} PRIVATE ${PROJECT_SOURCE_DIR})
      target_link_libraries(${name}_${stem} PRIVATE ${fuzz_libs})
      target_link_options(${name}_${stem} PRIVATE -fsanitize=fuzzer,address)
      if(LOOM_BUILD_TESTS AND IS_DIRECTORY ${corpus})
        add_test(NAME ${name}_${stem}_corpus COMMAND ${name}_${stem} -runs=0 ${corpus})
      endif()
    elseif(LOOM_BUILD_TESTS AND IS_DIRECTORY ${corpus})
      add_executable(${name}_${stem}_corpus ${fuzz_srcs_of}
                     ${PROJECT_SOURCE_DIR}/cmake/fuzz_corpus_main.cc)
      target_include_directories(${name}_${stem}_corpus PRIVATE ${PROJECT_SOURCE_DIR})
      target_link_libraries(${name}_${stem}_corpus PRIVATE ${fuzz_libs})
      add_test(NAME ${name}_${stem}_corpus COMMAND ${name}_${stem}_corpus ${corpus})
      set_tests_properties(${name}_${stem}_corpus PROPERTIES TIMEOUT 120 LABELS fuzz-corpus)
    endif()
  endforeach()
endfunction()

# A module's test support (loom/<module>/testing/: fakes, test templates, shared fixtures), as the
# static library loom_<module>_testing that only tests, benchmarks and fuzzers link (through
# loom_module's TEST_DEPS), never a product library or binary. Built only when something that
# links it is (EXCLUDE_FROM_ALL), so a build without tests does not compile it.
#   loom_testing_library(<module> SRCS testing/foo.cc ... DEPS <libraries its headers need>)
function(loom_testing_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(loom_${name}_testing STATIC EXCLUDE_FROM_ALL ${ARG_SRCS})
  target_include_directories(loom_${name}_testing PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(loom_${name}_testing PUBLIC loom_${name} ${ARG_DEPS})
endfunction()
