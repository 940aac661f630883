/** @type {AppTypes.Config} */
// OHIF v3 configuration for viewing cdss results stored in Orthanc (DICOMweb plugin).
//
// The viewer and Orthanc are served from ONE origin (viewer/serve.py, or nginx with the same
// rules): OHIF's files at /, Orthanc's DICOMweb API at /dicom-web and WADO-URI at /wado.
// So every root below is a same-origin path: no CORS, no CDN, nothing fetched from the internet.
window.config = {
  name: 'cdss/viewer/app-config.js',
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {
    // No onboarding tour: it would cover the viewport (and screenshots) on first visit.
    'ohif.tours': [],
    // OHIF 3.13.2 aborts loading a whole TID 1500 SR when one measurement group has no spatial
    // coordinates (extensions/cornerstone-dicom-sr `_checkIfCanAddMeasurementsToDisplaySet`
    // reads `measurement.coords[0].ReferencedSOPSequence` unguarded). cdss SRs have such groups
    // on purpose (the spondylolisthesis summary, levels not measured). Give them an empty
    // coordinate so OHIF skips them instead of failing; every group with a SCOORD still shows.
    onBeforeSRAddMeasurement: ({ measurement }) =>
      measurement.coords && measurement.coords.length ? measurement : { ...measurement, coords: [{}] },
  },
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  // Tour pop-ups ("Welcome to OHIF") would cover the viewport in screenshots.
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc (cdss PACS)',
        name: 'orthanc',
        wadoUriRoot: '/wado',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
  httpErrorHandler: error => {
    console.warn('cdss viewer: DICOMweb request failed', error.status);
  },
};
