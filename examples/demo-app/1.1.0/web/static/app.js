console.log('new');
