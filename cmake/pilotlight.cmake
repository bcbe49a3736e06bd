# pilotlight_add_module(NAME SOURCES a.cc b.cc DEPS other_module lib...)
# One static library per folder under src/, includes rooted at src/.
function(pilotlight_add_module name)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS;PUBLIC_DEPS" ${ARGN})
  add_library(pl_${name} STATIC ${M_SOURCES})
  target_include_directories(pl_${name} PUBLIC ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(pl_${name} PRIVATE ${M_DEPS} PUBLIC ${M_PUBLIC_DEPS})
endfunction()
