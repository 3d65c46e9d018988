# Install rules (included from the top CMakeLists.txt once the targets exist):
#   bin/starling                              the CLI (linked with the static library)
#   include/starling.h                        the public API
#   lib/libstarling.so.X.Y.Z, .so.X, .so      the shared library (SONAME libstarling.so.X)
#   lib/libstarling.a                         the static library, same objects
#   lib/pkgconfig/starling.pc                 pkg-config
#   lib/cmake/starling/                       find_package(starling): starling::starling,
#                                             starling::starling_static
# "lib" is GNUInstallDirs' CMAKE_INSTALL_LIBDIR (lib/x86_64-linux-gnu under /usr on Debian).
include(CMakePackageConfigHelpers)

set(STARLING_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/starling)

install(TARGETS starling EXPORT starlingTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS starling_static EXPORT starlingStaticTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS starling_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/starling.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

install(EXPORT starlingTargets NAMESPACE starling:: DESTINATION ${STARLING_CMAKEDIR})
install(EXPORT starlingStaticTargets NAMESPACE starling:: DESTINATION ${STARLING_CMAKEDIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/starlingConfig.cmake.in
  ${PROJECT_BINARY_DIR}/starlingConfig.cmake INSTALL_DESTINATION ${STARLING_CMAKEDIR})
# 0.x: a new minor version may change the ABI, so only the same minor version matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/starlingConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/starlingConfig.cmake
              ${PROJECT_BINARY_DIR}/starlingConfigVersion.cmake
        DESTINATION ${STARLING_CMAKEDIR})

# starling.pc is written when installing, not when configuring: `cmake --install
# --prefix P` changes CMAKE_INSTALL_PREFIX only then, and the file must name P. It is made
# in a directory of its own beside the install script (the build tree), installed, then
# removed: an install as root leaves nothing behind that a later one could not overwrite.
foreach(kind LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${kind}}")
    set(STARLING_PC_${kind} "${CMAKE_INSTALL_${kind}}")
  else()
    set(STARLING_PC_${kind} "\${prefix}/${CMAKE_INSTALL_${kind}}")
  endif()
endforeach()
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(STARLING_PC_DEST "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
else()
  set(STARLING_PC_DEST "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig")
endif()
install(CODE "
  string(RANDOM LENGTH 12 _starling_pc_tmp)
  set(_starling_pc_tmp \"\${CMAKE_CURRENT_LIST_DIR}/.starling-pc-\${_starling_pc_tmp}\")
  set(STARLING_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  set(STARLING_PC_LIBDIR [[${STARLING_PC_LIBDIR}]])
  set(STARLING_PC_INCLUDEDIR [[${STARLING_PC_INCLUDEDIR}]])
  set(STARLING_PC_VERSION \"${PROJECT_VERSION}\")
  configure_file(\"${CMAKE_CURRENT_LIST_DIR}/starling.pc.in\"
                 \"\${_starling_pc_tmp}/starling.pc\" @ONLY)
  file(INSTALL DESTINATION \"${STARLING_PC_DEST}\" TYPE FILE
       FILES \"\${_starling_pc_tmp}/starling.pc\")
  file(REMOVE_RECURSE \"\${_starling_pc_tmp}\")
")
