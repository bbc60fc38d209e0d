# Module build rules. Each loom/<module>/ folder holds header, source, test, benchmark and fuzzer
# of a unit side by side; the rules below pick them up by suffix so adding a unit needs no edit:
#   foo.cc            -> library loom_<module>
#   foo_test.cc       -> test binary loom_<module>_foo_test (registered in CTest)
#   foo_benchmark.cc  -> benchmark binary <module>_foo_benchmark (run by hand / bench scripts)
#   foo_fuzzer.cc     -> libFuzzer target <module>_foo_fuzzer (fuzz preset only)

function(loom_module name)
  cmake_parse_arguments(ARG "" "" "DEPS;TEST_DEPS;EXCLUDE" ${ARGN})
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
    target_link_libraries(loom_${name} PUBLIC ${ARG_DEPS})
  else()  # header-only so far
    add_library(loom_${name} INTERFACE)
    target_include_directories(loom_${name} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(loom_${name} INTERFACE ${ARG_DEPS})
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

  if(LOOM_BUILD_FUZZERS)
    foreach(z ${fuzz_srcs})
      get_filename_component(stem ${z} NAME_WE)
      add_executable(${name}_${stem} ${z})
      target_link_libraries(${name}_${stem} PRIVATE loom_${name} ${ARG_TEST_DEPS})
      target_link_options(${name}_${stem} PRIVATE -fsanitize=fuzzer,address)
    endforeach()
  endif()
endfunction()
