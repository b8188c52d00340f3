console.log('old');
